package bootfiles

import (
	"path"
	"strings"
	"testing"
)

// FuzzCheckName holds CheckName to what the servers rely on: a name it
// accepts is clean, relative, within MaxNameLen, free of "..", control
// bytes and backslashes, so joined under any root it stays there.
// Seeds: testdata/fuzz/FuzzCheckName.
func FuzzCheckName(f *testing.F) {
	f.Fuzz(func(t *testing.T, name string) {
		if CheckName(name) != nil {
			return
		}
		switch {
		case len(name) == 0 || len(name) > MaxNameLen:
			t.Fatalf("accepted %q of length %d", name, len(name))
		case strings.HasPrefix(name, "/") || strings.ContainsAny(name, "\\\x00"):
			t.Fatalf("accepted %q", name)
		case path.Clean(name) != name:
			t.Fatalf("accepted unclean %q", name)
		}
		for _, elem := range strings.Split(name, "/") {
			if elem == ".." || elem == "." || elem == "" {
				t.Fatalf("accepted %q with element %q", name, elem)
			}
		}
		for i := 0; i < len(name); i++ {
			if name[i] < 0x20 || name[i] == 0x7f {
				t.Fatalf("accepted %q with control byte %#x", name, name[i])
			}
		}
		if j := path.Join("/root", name); !strings.HasPrefix(j, "/root/") {
			t.Fatalf("accepted %q, which joins to %q", name, j)
		}
	})
}
