package inventory_test

import (
	"context"
	"testing"
	"time"

	"github.com/metal-dev/metal/inventory"
)

// A serve is recorded under its URL: announcing again (or a serve started
// anew at the same URL) updates the one record; the list is most recently
// seen first.
func TestServers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := inventory.Open(ctx, inventory.NewMemoryKV(), inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, srv := range []inventory.Server{
		{Owner: "a pid 1", URL: "http://192.0.2.11:8080", Seen: t0},
		{Owner: "b pid 2", URL: "http://192.0.2.12:8080", Seen: t0.Add(time.Second)},
		{Owner: "a pid 3", URL: "http://192.0.2.11:8080", Seen: t0.Add(2 * time.Second)},
	} {
		if _, err := s.PutServer(ctx, srv); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Servers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Owner != "a pid 3" || got[1].Owner != "b pid 2" {
		t.Errorf("servers: %+v", got)
	}
	if _, err := s.PutServer(ctx, inventory.Server{Owner: "c"}); err == nil {
		t.Error("a server without a URL was recorded")
	}
}
