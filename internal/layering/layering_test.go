package layering

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/metal-dev/metal/"

// allowed maps a folder of the module to the folders its packages may
// import (besides their own folder and the standard library and outside
// modules). A package takes the rule of the longest folder that holds it.
// The order is the layering of ARCHITECTURE.md, lowest first.
var allowed = map[string][]string{
	"internal":  nil,
	"inventory": {"internal"},
	"bmc":       {"internal"},
	"site":      {"internal"},
	// Writes a first site file from what a BMC scan found: it reads the
	// scan, never the language's loader.
	"site/scaffold": {"bmc", "internal"},
	// Protocol packages ask an interface what to answer: never the store.
	"pxe": {"internal"},
	// The store-backed policy, lease store and agent server answer them.
	"pxe/storepolicy": {"pxe", "inventory", "internal"},
	"pxe/storeleases": {"pxe", "inventory", "internal"},
	"pxe/storeagent":  {"pxe", "inventory", "internal"},
	"images":          {"pxe", "internal"},
	"converge":        {"site", "images", "pxe", "bmc", "inventory", "internal"},
	"doctor":          {"converge", "site", "images", "pxe", "bmc", "inventory", "internal"},
	"daemon":          {"converge", "site", "images", "pxe", "bmc", "inventory", "internal"},
	"lab":             {"daemon", "converge", "site", "images", "pxe", "bmc", "inventory", "internal"},
	"cmd":             {"lab", "daemon", "doctor", "converge", "site", "images", "pxe", "bmc", "inventory", "internal"},
}

// known are arrows that still run the wrong way, each to be removed here
// when it is mended; a new one fails the test.
var known = map[string]bool{}

// testHelper says whether a package exists for tests (pxetest, storetest,
// apitest, ...): shipped code never imports one.
func testHelper(pkg string) bool {
	for _, part := range strings.Split(pkg, "/") {
		if strings.HasSuffix(part, "test") || part == "testpeer" {
			return true
		}
	}
	return false
}

// rule returns the folder whose rule pkg follows.
func rule(pkg string) (string, bool) {
	best := ""
	for dir := range allowed {
		if (pkg == dir || strings.HasPrefix(pkg, dir+"/")) && len(dir) > len(best) {
			best = dir
		}
	}
	return best, best != ""
}

func within(pkg, dir string) bool { return pkg == dir || strings.HasPrefix(pkg, dir+"/") }

// TestLayering lists every package's imports with go list and fails on an
// arrow the layering does not allow.
func TestLayering(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	touchSources(t, root)
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, ok := strings.CutPrefix(fields[0], module)
		if !ok {
			continue
		}
		dir, ok := rule(pkg)
		if !ok {
			t.Errorf("%s: no layering rule; add its folder to allowed (and to ARCHITECTURE.md)", pkg)
			continue
		}
		for _, imp := range fields[1:] {
			imp, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			arrow := pkg + " -> " + imp
			switch {
			case known[arrow]:
				seen[arrow] = true
			case testHelper(imp) && !testHelper(pkg) && pkg != "cmd/metal-bench":
				t.Errorf("%s: shipped code imports the test helper %s", pkg, imp)
			case within(pkg, "cmd"):
			case func() bool { d, _ := rule(imp); return d == dir }():
			case !slices.ContainsFunc(allowed[dir], func(d string) bool { return within(imp, d) }):
				t.Errorf("%s imports %s: %s may import only %v", pkg, imp, dir, allowed[dir])
			}
		}
	}
	for arrow := range known {
		if !seen[arrow] {
			t.Errorf("%s is mended: remove it from known", arrow)
		}
	}
}

// touchSources reads every Go file of the module, so that go test's cache,
// which sees what the test opens but not what go list reads, runs the test
// again whenever an import may have changed.
func touchSources(t *testing.T, root string) {
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata"):
			return filepath.SkipDir
		case !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go"):
			_, err = os.ReadFile(path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
