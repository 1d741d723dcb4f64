package plan

import "testing"

func TestVersionLess(t *testing.T) {
	for name, tc := range map[string]struct {
		a, b string
		less bool
	}{
		"patch":            {"1.16.2", "1.17.0", true},
		"newer":            {"1.17.0", "1.16.2", false},
		"equal":            {"1.16.2", "1.16.2", false},
		"ten after nine":   {"2.9.0", "2.10.0", true},
		"longer is newer":  {"2.10", "2.10.0.1", true},
		"vendor prefix":    {"U46 v1.60", "U46 v2.00", true},
		"separators":       {"5.10.50.00", "5-10-50-00", false},
		"letter suffix":    {"1.0", "1.0a", true},
		"letters compared": {"1.0a", "1.0b", true},
		"case":             {"A1", "a1", false},
	} {
		t.Run(name, func(t *testing.T) {
			if got := VersionLess(tc.a, tc.b); got != tc.less {
				t.Errorf("VersionLess(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.less)
			}
		})
	}
}
