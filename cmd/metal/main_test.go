package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metal-dev/metal/cmd/metal/internal/view"
)

// metal runs the command line in-process and returns its exit code and
// output.
func metal(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	var stdout, stderr bytes.Buffer
	code := run(args, strings.NewReader(""), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestExitCodes(t *testing.T) {
	tests := map[string]struct {
		args       []string
		code       int
		wantStdout string
		wantStderr string
	}{
		"version":              {args: []string{"version"}, code: 0, wantStdout: "metal "},
		"validate examples":    {args: []string{"validate", "../../hcl-examples/homelab.hcl", "../../hcl-examples/colo.hcl"}, code: 0, wantStdout: "valid (248 machines)"},
		"validate broken":      {args: []string{"validate", "../../site/testdata/invalid-duplicate-mac.hcl"}, code: 1, wantStderr: "line 20"},
		"validate missing":     {args: []string{"validate", "no-such-file.hcl"}, code: 1, wantStderr: "no such file"},
		"validate no args":     {args: []string{"validate"}, code: 2, wantStderr: "See 'metal --help'"},
		"unknown verb":         {args: []string{"frobnicate"}, code: 2, wantStderr: "unknown command"},
		"unknown flag":         {args: []string{"plan", "--frob", "x.hcl"}, code: 2, wantStderr: "unknown flag"},
		"plan":                 {args: []string{"plan", "../../hcl-examples/homelab.hcl"}, code: 0, wantStdout: "Plan: 3 to provision"},
		"plan detailed":        {args: []string{"plan", "--detailed-exitcode", "../../hcl-examples/homelab.hcl"}, code: 2},
		"plan broken":          {args: []string{"plan", "../../site/testdata/invalid-ip-in-pool.hcl"}, code: 1, wantStderr: "inside the dynamic pool"},
		"single-dash var":      {args: []string{"plan", "-var", "nodes_per_rack=2", "../../hcl-examples/colo.hcl"}, code: 0, wantStdout: "Plan: 16 to provision"},
		"single-dash var=":     {args: []string{"plan", "-var=nodes_per_rack=3", "../../hcl-examples/colo.hcl"}, code: 0, wantStdout: "Plan: 20 to provision"},
		"undeclared var":       {args: []string{"plan", "-var", "nope=1", "../../hcl-examples/homelab.hcl"}, code: 1, wantStderr: "declares no variable"},
		"fmt check formatted":  {args: []string{"fmt", "-check", "../../hcl-examples/homelab.hcl"}, code: 0},
		"fmt syntax error":     {args: []string{"fmt", "-check", "../../site/testdata/invalid-syntax-error.hcl"}, code: 1, wantStderr: "Unclosed configuration block"},
		"completion available": {args: []string{"completion", "bash"}, code: 0, wantStdout: "bash completion"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			code, stdout, stderr := metal(t, nil, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			if !strings.Contains(stdout, tc.wantStdout) {
				t.Errorf("stdout lacks %q:\n%s", tc.wantStdout, stdout)
			}
			if !strings.Contains(stderr, tc.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.wantStderr, stderr)
			}
		})
	}
}

func TestValidateJSON(t *testing.T) {
	code, stdout, _ := metal(t, nil, "validate", "--json", "../../hcl-examples/qemu-lab.hcl", "../../site/testdata/invalid-many-errors.hcl")
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	var got []view.Validated
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("%v in %s", err, stdout)
	}
	if len(got) != 2 || !got[0].Valid || got[1].Valid || got[1].ErrorCount != 4 {
		t.Fatalf("got %+v", got)
	}
	d := got[1].Diagnostics[0]
	if d.Range == nil || d.Range.Start.Line != 26 || d.Summary != "Invalid MAC address" {
		t.Errorf("first diagnostic = %+v", d)
	}
}

// The BMC password must not appear anywhere in plan output, human or JSON.
func TestPlanNeverPrintsSecrets(t *testing.T) {
	const secret = "s3cr3t-bmc-pw-0451"
	env := map[string]string{"METAL_VAR_bmc_password": secret}
	for _, args := range [][]string{
		{"plan", "../../hcl-examples/homelab.hcl"},
		{"plan", "--json", "../../hcl-examples/homelab.hcl"},
		{"validate", "--json", "../../hcl-examples/homelab.hcl"},
	} {
		code, stdout, stderr := metal(t, env, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		if strings.Contains(stdout+stderr, secret) {
			t.Errorf("%v prints the secret", args)
		}
		if args[1] != "--json" && !strings.Contains(stdout, "(sensitive)") && args[0] == "plan" {
			t.Errorf("%v: no (sensitive) placeholder", args)
		}
	}
}

func TestPlanOutSavesJSON(t *testing.T) {
	out := filepath.Join(t.TempDir(), "tonight.plan")
	code, stdout, stderr := metal(t, nil, "plan", "-out", out, "../../hcl-examples/homelab.hcl")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "Saved the plan to") {
		t.Errorf("stdout: %s", stdout)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Digest  string
		Summary struct{ Create int }
	}
	if err := json.Unmarshal(b, &p); err != nil || p.Summary.Create != 3 || len(p.Digest) != 64 {
		t.Errorf("saved plan: %+v %v", p, err)
	}
}

func TestFmtRewrites(t *testing.T) {
	p := filepath.Join(t.TempDir(), "site.hcl")
	if err := os.WriteFile(p, []byte("site \"x\" {\nstate=\"file://a\"\n  listen     = \":1\"\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ := metal(t, nil, "fmt", "-check", "-diff", p)
	if code != 1 || !strings.Contains(stdout, "+  state  = \"file://a\"") {
		t.Fatalf("check: exit %d\n%s", code, stdout)
	}
	if code, _, _ := metal(t, nil, "fmt", p); code != 0 {
		t.Fatalf("fmt exit %d", code)
	}
	got, _ := os.ReadFile(p)
	if want := "site \"x\" {\n  state  = \"file://a\"\n  listen = \":1\"\n}\n"; string(got) != want {
		t.Errorf("formatted:\n%q\nwant\n%q", got, want)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("mode changed to %v", st.Mode().Perm())
	}
	if code, _, _ := metal(t, nil, "fmt", "-check", p); code != 0 {
		t.Errorf("second check exit %d", code)
	}
}

func TestHelpTeaches(t *testing.T) {
	for _, verb := range []string{"validate", "plan", "fmt"} {
		code, stdout, _ := metal(t, nil, verb, "--help")
		if code != 0 || !strings.Contains(stdout, "Examples:") {
			t.Errorf("%s --help: exit %d, no examples:\n%s", verb, code, stdout)
		}
	}
}
