package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestManPages: metal docs writes a man page per command, and each says
// what the command's --help says: its summary and every flag.
func TestManPages(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := metal(t, nil, "docs", dir); code != 0 {
		t.Fatalf("metal docs: exit %d: %s", code, stderr)
	}
	root := newRootCmd(&app{})
	for _, verb := range []string{"apply", "serve", "init", "validate"} {
		cmd, _, err := root.Find([]string{verb})
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "metal-"+verb+".1"))
		if err != nil {
			t.Fatalf("no man page for metal %s: %v", verb, err)
		}
		page := strings.ReplaceAll(string(b), `\-`, "-")
		if !strings.Contains(page, cmd.Short) {
			t.Errorf("metal-%s.1 lacks the summary %q", verb, cmd.Short)
		}
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			if !strings.Contains(page, "--"+f.Name) {
				t.Errorf("metal-%s.1 lacks the flag --%s", verb, f.Name)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "metal.1")); err != nil {
		t.Errorf("no metal.1: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "metal-docs.1")); err == nil {
		t.Error("the hidden docs command got a man page")
	}
}
