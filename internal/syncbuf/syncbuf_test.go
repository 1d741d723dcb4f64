package syncbuf

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRecords(t *testing.T) {
	var b Buffer
	log := slog.New(slog.NewJSONHandler(&b, nil))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { log.Info("served", "n", i) })
	}
	wg.Wait()
	b.Write([]byte("not json\n"))
	log.Warn("refused", "file", "../x")

	tests := []struct {
		name  string
		match func(map[string]any) bool
		want  []string
	}{
		{"by message", func(m map[string]any) bool { return m["msg"] == "refused" }, []string{"../x"}},
		{"none", func(m map[string]any) bool { return m["msg"] == "absent" }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, r := range b.Records(tc.match) {
				got = append(got, fmt.Sprint(r["file"]))
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("Records (-want +got):\n%s", d)
			}
		})
	}
	if n := len(b.Records(func(m map[string]any) bool { return m["msg"] == "served" })); n != 8 {
		t.Errorf("%d served records, want 8 (each concurrent write whole)", n)
	}
}
