package backend_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
)

func TestParse(t *testing.T) {
	tests := map[string]struct {
		url     string
		want    backend.Location
		wantErr string
	}{
		"file":             {url: "file://.metal/state.db", want: backend.Location{Scheme: "file", Path: ".metal/state.db"}},
		"file absolute":    {url: "file:///var/lib/metal/state.db", want: backend.Location{Scheme: "file", Path: "/var/lib/metal/state.db"}},
		"etcd":             {url: "etcd://10.0.0.5:2379,10.0.0.6:2379/metal", want: backend.Location{Scheme: "etcd", Endpoints: []string{"10.0.0.5:2379", "10.0.0.6:2379"}, Prefix: "/metal/"}},
		"etcd deep prefix": {url: "etcd://e:2379/sites/ams1/", want: backend.Location{Scheme: "etcd", Endpoints: []string{"e:2379"}, Prefix: "/sites/ams1/"}},
		"etcd no prefix":   {url: "etcd://e:2379", want: backend.Location{Scheme: "etcd", Endpoints: []string{"e:2379"}, Prefix: "/metal/"}},
		"memory":           {url: "memory://", want: backend.Location{Scheme: "memory"}},
		"no scheme":        {url: "/var/lib/state.db", wantErr: "want file://PATH"},
		"empty file":       {url: "file://", wantErr: "needs a path"},
		"etcd no port":     {url: "etcd://e1,e2:2379/x", wantErr: `endpoint "e1" needs a port`},
		"unknown":          {url: "consul://c:8500", wantErr: `unknown scheme "consul"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := backend.Parse(tc.url)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tc.wantErr)
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

func TestOpenFile(t *testing.T) {
	ctx := context.Background()
	url := "file://" + filepath.Join(t.TempDir(), "sub", "state.db")
	s, err := backend.Open(ctx, url, backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.PutMachine(ctx, inventory.Machine{Name: "a", MAC: "52:54:00:00:00:01"}); err != nil {
		t.Fatal(err)
	}
	if _, err := backend.Open(ctx, url, backend.Options{}); err == nil || !strings.Contains(err.Error(), "is locked by PID") {
		t.Errorf("second open: got %v, want a locked-by-PID error", err)
	}
	if _, err := s.Machine(ctx, "nope"); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("got %v", err)
	}
}
