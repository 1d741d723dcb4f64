package humanize_test

import (
	"testing"

	"github.com/metal-dev/metal/internal/humanize"
)

func TestBytes(t *testing.T) {
	for n, want := range map[uint64]string{
		0:                 "0 B",
		1023:              "1023 B",
		1024:              "1.0 KiB",
		1536:              "1.5 KiB",
		4 << 30:           "4.0 GiB",
		1<<40 + 1<<39:     "1.5 TiB",
		^uint64(0):        "16.0 EiB",
		20*1<<30 + 1<<29:  "20.5 GiB",
		999 * 1024 * 1024: "999.0 MiB",
	} {
		if got := humanize.Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}
