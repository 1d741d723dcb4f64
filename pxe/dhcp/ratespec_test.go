package dhcp

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseRateLimit(t *testing.T) {
	tests := map[string]struct {
		perMAC, pool string
		want         RateLimit
		err          string
	}{
		"defaults": {perMAC: "10/500ms", pool: "64/1s",
			want: RateLimit{Burst: 10, Every: 500 * time.Millisecond, PoolBurst: 64, PoolEvery: time.Second}},
		"off":               {perMAC: "off", pool: "64/1s", want: RateLimit{Disabled: true}},
		"off ignores pool":  {perMAC: "off", pool: "nonsense", want: RateLimit{Disabled: true}},
		"no slash":          {perMAC: "10", pool: "64/1s", err: `rate limit "10": want BURST/INTERVAL`},
		"zero burst":        {perMAC: "0/1s", pool: "64/1s", err: `rate limit "0/1s": want BURST/INTERVAL`},
		"bad interval":      {perMAC: "10/soon", pool: "64/1s", err: "the interval must be a positive duration"},
		"negative interval": {perMAC: "10/-1s", pool: "64/1s", err: "the interval must be a positive duration"},
		"bad pool":          {perMAC: "10/500ms", pool: "64", err: `pool budget "64": want BURST/INTERVAL (like 64/1s)`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseRateLimit(tc.perMAC, tc.pool)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}
