package main

import (
	"path/filepath"
	"strings"
	"testing"
)

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
