package tftp

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/metal-dev/metal/pxe/bootfiles"
)

// TestBootCacheFollowsTheFile: an iPXE binary is served from memory
// after its first transfer, and a binary rewritten in place (same size,
// same inode) or replaced by another file is served as it is now, to
// lockstep (curl) and windowed (atftp) clients alike.
func TestBootCacheFollowsTheFile(t *testing.T) {
	for _, name := range []string{"curl", "atftp windowsize"} {
		c := clients[name]
		t.Run(name, func(t *testing.T) {
			needTool(t, c.tool, c.pkg)
			dir := t.TempDir()
			for _, n := range []string{bootfiles.BIOS, bootfiles.UEFI, bootfiles.UEFISNP} {
				mustT(t, os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644))
			}
			ipxe, err := bootfiles.FindIPXE(dir)
			mustT(t, err)
			ts := startServer(t, func(cfg *Config) { cfg.IPXE = ipxe })
			path := filepath.Join(dir, bootfiles.BIOS)
			fetch := func(want []byte) {
				t.Helper()
				out := filepath.Join(t.TempDir(), "out")
				if b, err := c.get(ts.addr, bootfiles.BIOS, out).CombinedOutput(); err != nil {
					t.Fatalf("%s: %v\n%s", c.tool, err, b)
				}
				if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
					t.Fatalf("fetched %d bytes starting %q, want %d starting %q", len(got), got[:min(8, len(got))], len(want), want[:8])
				}
			}
			first := patterned(100_000)
			mustT(t, os.WriteFile(path, first, 0o644))
			fetch(first)
			fetch(first) // from memory

			// The same size, written over the same inode.
			rewritten := bytes.Clone(first)
			copy(rewritten, "rewritten")
			mustT(t, os.WriteFile(path, rewritten, 0o644))
			fetch(rewritten)

			// Another file renamed over it, of another size.
			replaced := patterned(3 * 1468)
			copy(replaced, "replaced")
			mustT(t, os.WriteFile(path+".new", replaced, 0o644))
			mustT(t, os.Rename(path+".new", path))
			fetch(replaced)

			ts.srv.boot.mu.Lock()
			got := len(ts.srv.boot.files)
			ts.srv.boot.mu.Unlock()
			if got != 1 {
				t.Errorf("the cache holds %d versions, want the last one", got)
			}
		})
	}
}
