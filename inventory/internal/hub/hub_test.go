package hub

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestReplayAfterTheRingWraps: once more changes were published than the
// ring holds, a watcher from a revision still in it gets every later
// change in order, and one from an older revision is refused.
func TestReplayAfterTheRingWraps(t *testing.T) {
	const size = 8
	tests := map[string]struct {
		published int // revisions 1..published, one change each
		from      int64
		want      []int
		err       error
	}{
		"ring not full":        {published: 5, from: 2, want: []int{3, 4, 5}},
		"wrapped once":         {published: 9, from: 1, want: []int{2, 3, 4, 5, 6, 7, 8, 9}},
		"wrapped many times":   {published: 100, from: 95, want: []int{96, 97, 98, 99, 100}},
		"oldest replayable":    {published: 100, from: 92, want: []int{93, 94, 95, 96, 97, 98, 99, 100}},
		"older than the ring":  {published: 100, from: 91, err: ErrLagged},
		"from now: no replays": {published: 100, from: 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := New[int](size, 16, 0)
			for rev := 1; rev <= tc.published; rev++ {
				h.Publish(int64(rev), []int{rev})
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			got := make(chan int, 100)
			err := h.Subscribe(ctx, tc.from, nil, func(it Item[int]) bool { got <- it.E; return true }, func(error) {})
			if !errors.Is(err, tc.err) {
				t.Fatalf("Subscribe from %d: %v, want %v", tc.from, err, tc.err)
			}
			if err != nil {
				return
			}
			// A change published now arrives after the replayed ones.
			h.Publish(int64(tc.published+1), []int{-1})
			var replayed []int
			for e := range got {
				if e == -1 {
					break
				}
				replayed = append(replayed, e)
			}
			if diff := cmp.Diff(tc.want, replayed); diff != "" {
				t.Errorf("replayed (-want +got):\n%s", diff)
			}
		})
	}
}
