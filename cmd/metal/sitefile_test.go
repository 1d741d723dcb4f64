package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSiteFileResolution: --site, else the deprecated argument, else
// $METAL_SITE, else ./site.hcl; two different files is a usage error.
func TestSiteFileResolution(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("METAL_SITE", "")
	var f siteFlag
	if got := f.name(); got != "site.hcl" {
		t.Errorf("no file anywhere: %q, want site.hcl (reported missing)", got)
	}
	if err := os.WriteFile("site.hcl", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := f.name(); got != "site.hcl" {
		t.Errorf("./site.hcl present: %q", got)
	}
	t.Setenv("METAL_SITE", "/srv/ams1.hcl")
	if got := f.name(); got != "/srv/ams1.hcl" {
		t.Errorf("$METAL_SITE: %q", got)
	}
	if got, err := f.file([]string{"arg.hcl"}); err != nil || got != "arg.hcl" {
		t.Errorf("the argument: %q, %v", got, err)
	}
	f.path = "flag.hcl"
	if got, err := f.file(nil); err != nil || got != "flag.hcl" {
		t.Errorf("--site: %q, %v", got, err)
	}
	if got, err := f.file([]string{"flag.hcl"}); err != nil || got != "flag.hcl" {
		t.Errorf("--site and the same argument: %q, %v", got, err)
	}
	if _, err := f.file([]string{"other.hcl"}); err == nil {
		t.Error("--site and another argument: no error")
	}
}

// TestSiteFlagEveryVerb: plan, apply, serve and doctor take --site as
// well as the deprecated argument, and say so in their help.
func TestSiteFlagEveryVerb(t *testing.T) {
	example := filepath.Join("..", "..", "hcl-examples", "homelab.hcl")
	t.Setenv("METAL_SITE", "")
	for _, verb := range []string{"plan", "apply", "serve", "doctor", "machines", "events", "bmc", "backup", "restore", "standby", "promote", "token create", "images fetch"} {
		code, out, stderr := metal(t, nil, append(strings.Fields(verb), "--help")...)
		if code != 0 || !strings.Contains(out, "--site") {
			t.Errorf("metal %s --help: exit %d, no --site: %s%s", verb, code, out, stderr)
		}
	}
	for _, verb := range []string{"plan", "apply", "serve", "doctor"} {
		_, out, _ := metal(t, nil, verb, "--help")
		if !strings.Contains(out, "deprecated") {
			t.Errorf("metal %s --help does not say the argument is deprecated", verb)
		}
	}
	byFlag, outFlag, _ := metal(t, nil, "plan", "--refresh=false", "--site", example)
	byArg, outArg, _ := metal(t, nil, "plan", "--refresh=false", example)
	if byFlag != 0 || byFlag != byArg || outFlag != outArg {
		t.Errorf("plan --site: exit %d, plan FILE: exit %d; outputs equal: %v", byFlag, byArg, outFlag == outArg)
	}
	if code, _, stderr := metal(t, nil, "plan", "--site", example, "other.hcl"); code != exitUsage || !strings.Contains(stderr, "two site files") {
		t.Errorf("plan --site A B: exit %d: %s", code, stderr)
	}
}
