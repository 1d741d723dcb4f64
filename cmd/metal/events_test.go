package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/inventory/etcdtest"
)

func TestEvents(t *testing.T) {
	sitePath := stateSite(t)
	s := openSiteStore(t, sitePath)
	fillStore(t, s, time.Now())
	s.Close()

	messages := func(out string) []string {
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			got = append(got, strings.Join(f[len(f)-2:], " "))
		}
		return got
	}
	seq := func(from, to, step int, format string) []string {
		var out []string
		for i := from; i <= to; i += step {
			out = append(out, fmt.Sprintf(format, i))
		}
		return out
	}
	tests := map[string]struct {
		args []string
		want []string
	}{
		"last 50 of the log": {args: nil, want: interleave(71, 120)},
		"last 3":             {args: []string{"--last", "3"}, want: []string{"offer 118", "fetch 119", "offer 120"}},
		"all of one machine": {args: []string{"--machine", "web-01", "--last", "0"}, want: seq(1, 119, 2, "fetch %d")},
		"last 2 by MAC":      {args: []string{"--machine", "52:54:00:aa:bb:cc", "-n", "2"}, want: []string{"offer 118", "offer 120"}},
		"more than there is": {args: []string{"--machine", "web-01", "-n", "1000"}, want: seq(1, 119, 2, "fetch %d")},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			code, stdout, stderr := metal(t, nil, append([]string{"events", "--site", sitePath}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if d := cmp.Diff(tc.want, messages(stdout)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}

	code, stdout, _ := metal(t, nil, "events", "--site", sitePath, "--json", "-n", "2")
	if code != 0 {
		t.Fatal(stdout)
	}
	var got []inventory.Event
	dec := json.NewDecoder(strings.NewReader(stdout))
	for dec.More() {
		var e inventory.Event
		if err := dec.Decode(&e); err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
	}
	if len(got) != 2 || got[0].Message != "fetch 119" || got[0].Seq >= got[1].Seq || got[1].Kind != inventory.EventDHCPOffer || got[1].MAC != "52:54:00:aa:bb:cc" {
		t.Errorf("json lines: %+v", got)
	}

	code, _, stderr := metal(t, nil, "events", "--site", sitePath, "--machine", "nope")
	if code != 1 || !strings.Contains(stderr, "`metal machines` lists them") {
		t.Errorf("unknown machine: exit %d, %s", code, stderr)
	}
}

// interleave is what fillStore logs from event from to event to.
func interleave(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		if i%2 == 1 {
			out = append(out, fmt.Sprintf("fetch %d", i))
		} else {
			out = append(out, fmt.Sprintf("offer %d", i))
		}
	}
	return out
}

// TestEventsFollow follows the log of an etcd store while another metal
// (another client of the same etcd) appends to it: the backlog first, then
// each new event once, only the followed machine's.
func TestEventsFollow(t *testing.T) {
	c := etcdtest.New(t, 1)
	ctx := testCtx(t)
	url := c.StateURL("/metal-follow")
	writer, err := backend.Open(ctx, url, backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	if _, err := writer.PutMachine(ctx, inventory.Machine{Name: "web-01", MAC: "52:54:00:00:01:01"}); err != nil {
		t.Fatal(err)
	}
	appendEv := func(machine, msg string) {
		t.Helper()
		e := inventory.Event{Kind: inventory.EventAgent, Machine: machine, Message: msg}
		if machine == "" {
			e.MAC = "52:54:00:00:01:01" // before the machine was named
		}
		if _, err := writer.AppendEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	appendEv("web-01", "old 1")
	appendEv("", "old by mac")
	appendEv("other", "not ours")

	reader, err := backend.Open(ctx, url, backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- runEvents(fctx, pw, inventory.ReaderOf(reader), &eventsFlags{machine: "web-01", follow: true, last: 50})
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	next := func() string {
		t.Helper()
		got := make(chan string, 1)
		go func() {
			if lines.Scan() {
				f := strings.Fields(lines.Text())
				got <- strings.Join(f[len(f)-2:], " ")
			}
			close(got)
		}()
		select {
		case l := <-got:
			return l
		case <-time.After(20 * time.Second):
			t.Fatal("no event line within 20s")
			return ""
		}
	}
	var got []string
	got = append(got, next(), next())
	for i := range 5 {
		appendEv("other", "not ours either")
		appendEv("web-01", fmt.Sprintf("new %d", i))
		got = append(got, next())
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("follow: %v", err)
	}
	reader.Close()
	want := []string{"old 1", "by mac", "new 0", "new 1", "new 2", "new 3", "new 4"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("followed (-want +got):\n%s", d)
	}
}
