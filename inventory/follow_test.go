package inventory_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/metal-dev/metal/inventory"
)

func TestEventQueryMatchesMACInAnyCase(t *testing.T) {
	e := inventory.Event{MAC: "52:54:00:ab:01:01"}
	for _, mac := range []string{"52:54:00:ab:01:01", "52:54:00:AB:01:01", "52-54-00-ab-01-01"} {
		if !(inventory.EventQuery{MAC: mac}).Matches(e) {
			t.Errorf("query MAC %s does not match event MAC %s", mac, e.MAC)
		}
	}
	if (inventory.EventQuery{MAC: "52:54:00:00:01:02"}).Matches(e) {
		t.Error("another MAC matches")
	}
	if !(inventory.EventQuery{Machine: "web-01"}).Matches(inventory.Event{Machine: "web-01"}) {
		t.Error("the name does not match")
	}
}

// TestFollow passes the backlog after AfterSeq, then new events, each
// once and in order, filtered as Events filters.
func TestFollow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := inventory.Open(ctx, inventory.NewMemoryKV(), inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	add := func(mac string) {
		if _, err := s.AppendEvent(ctx, inventory.Event{Kind: "dhcp", MAC: mac, Message: "m"}); err != nil {
			t.Fatal(err)
		}
	}
	a, b := "52:54:00:00:01:01", "52:54:00:00:01:02"
	add(a)
	add(b)
	add(a)
	var got []int64
	done := errors.New("done")
	errc := make(chan error, 1)
	go func() {
		errc <- inventory.Follow(ctx, s, inventory.EventQuery{MAC: a, AfterSeq: 1}, func(e inventory.Event) error {
			got = append(got, e.Seq)
			if len(got) == 3 {
				return done
			}
			return nil
		})
	}()
	time.Sleep(100 * time.Millisecond)
	add(b)
	add(a)
	add(a)
	if err := <-errc; !errors.Is(err, done) {
		t.Fatalf("Follow: %v", err)
	}
	if want := []int64{3, 5, 6}; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("followed %v, want %v", got, want)
	}
}
