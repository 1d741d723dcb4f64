package arguments

import (
	"os"
	"testing"
)

// TestSiteFileResolution: --site, else the deprecated argument, else
// $METAL_SITE, else ./site.hcl; two different files is a usage error.
func TestSiteFileResolution(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("METAL_SITE", "")
	var f Site
	if got := f.Name(); got != "site.hcl" {
		t.Errorf("no file anywhere: %q, want site.hcl (reported missing)", got)
	}
	if err := os.WriteFile("site.hcl", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := f.Name(); got != "site.hcl" {
		t.Errorf("./site.hcl present: %q", got)
	}
	t.Setenv("METAL_SITE", "/srv/ams1.hcl")
	if got := f.Name(); got != "/srv/ams1.hcl" {
		t.Errorf("$METAL_SITE: %q", got)
	}
	if got, err := f.File([]string{"arg.hcl"}); err != nil || got != "arg.hcl" {
		t.Errorf("the argument: %q, %v", got, err)
	}
	f.Path = "flag.hcl"
	if got, err := f.File(nil); err != nil || got != "flag.hcl" {
		t.Errorf("--site: %q, %v", got, err)
	}
	if got, err := f.File([]string{"flag.hcl"}); err != nil || got != "flag.hcl" {
		t.Errorf("--site and the same argument: %q, %v", got, err)
	}
	if _, err := f.File([]string{"other.hcl"}); err == nil {
		t.Error("--site and another argument: no error")
	}
}
