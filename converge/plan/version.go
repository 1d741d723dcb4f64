package plan

import (
	"strconv"
	"strings"
	"unicode"
)

// VersionLess reports whether firmware version a is older than b. Vendors
// write versions their own ways (1.16.2, 2.10.0.1, U46 v1.60, 5.10.50.00):
// both are split into runs of digits and runs of other characters, runs of
// digits compare as numbers and the others as text, and the first run
// that differs decides. Equal versions, and versions that differ only in
// case or separators, are not less.
func VersionLess(a, b string) bool {
	x, y := versionRuns(a), versionRuns(b)
	for i := range min(len(x), len(y)) {
		if c := compareRun(x[i], y[i]); c != 0 {
			return c < 0
		}
	}
	return len(x) < len(y)
}

// versionRuns splits v into runs of digits and runs of letters; other
// characters (dots, dashes, spaces) only separate.
func versionRuns(v string) []string {
	var out []string
	cur := []rune{}
	kind := 0 // 1 digits, 2 letters
	flush := func() {
		if len(cur) > 0 {
			out = append(out, string(cur))
			cur = cur[:0]
		}
	}
	for _, r := range strings.ToLower(v) {
		k := 0
		switch {
		case unicode.IsDigit(r):
			k = 1
		case unicode.IsLetter(r):
			k = 2
		}
		if k != kind {
			flush()
			kind = k
		}
		if k != 0 {
			cur = append(cur, r)
		}
	}
	flush()
	return out
}

func compareRun(a, b string) int {
	na, errA := strconv.ParseUint(a, 10, 64)
	nb, errB := strconv.ParseUint(b, 10, 64)
	switch {
	case errA == nil && errB == nil:
		switch {
		case na < nb:
			return -1
		case na > nb:
			return 1
		}
		return 0
	case errA == nil: // numbers before letters: 1.0 < 1.0a
		return -1
	case errB == nil:
		return 1
	}
	return strings.Compare(a, b)
}
