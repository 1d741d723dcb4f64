package bootfiles

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestCheckName(t *testing.T) {
	tests := map[string]struct {
		name string
		ok   bool
	}{
		"plain":            {name: "undionly.kpxe", ok: true},
		"nested":           {name: "machines/52-54-00-00-00-01/grub.cfg", ok: true},
		"dots in a name":   {name: "a..b/c...d", ok: true},
		"empty":            {name: ""},
		"dot":              {name: "."},
		"parent":           {name: "../../etc/passwd"},
		"inner parent":     {name: "a/../../b"},
		"trailing parent":  {name: "a/.."},
		"absolute":         {name: "/etc/passwd"},
		"double slash":     {name: "a//b"},
		"trailing slash":   {name: "a/"},
		"dot element":      {name: "./a"},
		"backslash":        {name: `..\..\etc\passwd`},
		"nul":              {name: "undionly.kpxe\x00.png"},
		"newline":          {name: "a\nb"},
		"delete":           {name: "a\x7fb"},
		"too long":         {name: strings.Repeat("a", MaxNameLen+1)},
		"longest":          {name: strings.Repeat("a", MaxNameLen), ok: true},
		"utf-8 is allowed": {name: "grüße", ok: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := CheckName(tc.name)
			if (err == nil) != tc.ok {
				t.Fatalf("CheckName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrBadName) {
				t.Errorf("error %v does not wrap ErrBadName", err)
			}
		})
	}
}

// testTree builds a served root beside a secret file outside it, with links
// that try to reach the secret.
func testTree(t testing.TB) (root, secret string) {
	t.Helper()
	base := t.TempDir()
	root = filepath.Join(base, "root")
	secret = filepath.Join(base, "secret")
	must(t, os.MkdirAll(filepath.Join(root, "sub"), 0o755))
	must(t, os.WriteFile(secret, []byte("secret"), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "sub", "file"), []byte("inside"), 0o644))
	must(t, os.Symlink("../secret", filepath.Join(root, "out-relative")))
	must(t, os.Symlink(secret, filepath.Join(root, "out-absolute")))
	must(t, os.Symlink("..", filepath.Join(root, "sub", "up")))
	must(t, os.Symlink("sub/file", filepath.Join(root, "in-link")))
	must(t, os.Symlink("..", filepath.Join(root, "top")))
	must(t, syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644))
	return root, secret
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestRootOpen(t *testing.T) {
	dir, _ := testTree(t)
	r, err := OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tests := map[string]struct {
		name    string
		want    string
		wantErr error
	}{
		"file":                 {name: "sub/file", want: "inside"},
		"link inside":          {name: "in-link", want: "inside"},
		"relative link out":    {name: "out-relative", wantErr: ErrBadName},
		"absolute link out":    {name: "out-absolute", wantErr: ErrBadName},
		"through a link to ..": {name: "top/secret", wantErr: ErrBadName},
		"link to .. and back":  {name: "sub/up/sub/file", want: "inside"},
		"traversal":            {name: "../secret", wantErr: ErrBadName},
		"missing":              {name: "nope", wantErr: fs.ErrNotExist},
		"directory":            {name: "sub", wantErr: fs.ErrNotExist},
		"fifo":                 {name: "fifo", wantErr: fs.ErrNotExist},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f, _, err := r.Open(tc.name)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					if f != nil {
						f.Close()
					}
					t.Fatalf("Open(%q) error = %v, want %v", tc.name, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b, _ := io.ReadAll(f)
			if string(b) != tc.want {
				t.Errorf("read %q, want %q", b, tc.want)
			}
		})
	}
}

// FuzzRootOpen asserts the one property that matters: whatever the name,
// Open never returns the content of a file outside the root.
func FuzzRootOpen(f *testing.F) {
	for _, s := range []string{"sub/file", "../secret", "out-relative", "top/secret", "/etc/passwd", "in-link", "a\x00b"} {
		f.Add(s)
	}
	dir, _ := testTree(f)
	r, err := OpenRoot(dir)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { r.Close() })
	f.Fuzz(func(t *testing.T, name string) {
		file, _, err := r.Open(name)
		if err != nil {
			return
		}
		defer file.Close()
		b, _ := io.ReadAll(file)
		if string(b) == "secret" {
			t.Fatalf("Open(%q) reached the file outside the root", name)
		}
		if CheckName(name) != nil {
			t.Fatalf("Open(%q) succeeded for a name CheckName refuses", name)
		}
	})
}
