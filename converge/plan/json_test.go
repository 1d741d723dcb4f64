package plan

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestWriteJSONMatchesEncoder: the streaming writer writes exactly what
// json.Encoder with an indent writes, for plans with no, one and several
// changes, and with the optional fields set.
func TestWriteJSONMatchesEncoder(t *testing.T) {
	change := func(name string, a Action) Change {
		return Change{Machine: name, Action: a, Attrs: []AttrChange{{Name: "image", After: &Value{Text: "<os & \"more\">"}}}}
	}
	tests := []struct {
		name string
		plan Plan
	}{
		{"nil changes", Plan{Site: "s"}},
		{"empty changes", Plan{Site: "s", Changes: []Change{}}},
		{"one", Plan{Site: "s", Changes: []Change{change("a", Create)}, Digest: "d"}},
		{"several, saved", Plan{Site: "s<1>", Changes: []Change{change("a", Create), change("b", Delete)},
			Summary: Summary{Create: 1, Delete: 1}, Digest: "d", SiteFile: "/x/site.hcl", SiteDigest: "e", Targets: []string{"a", "b"}}},
		{"findings, hardware read", Plan{Site: "s", Changes: []Change{change("a", Update)}, Digest: "d",
			Findings: []Finding{{Machine: "a", Message: `drift: bios.X is "1" on the BMC`}}, HardwareRefreshed: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var want, got bytes.Buffer
			enc := json.NewEncoder(&want)
			enc.SetIndent("", "  ")
			if err := enc.Encode(&tc.plan); err != nil {
				t.Fatal(err)
			}
			if err := tc.plan.WriteJSON(&got); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(want.String(), got.String()); d != "" {
				t.Errorf("WriteJSON (-encoder +got):\n%s", d)
			}
		})
	}
}
