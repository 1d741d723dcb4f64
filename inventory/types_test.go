package inventory

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestCanTransition(t *testing.T) {
	tests := map[string]struct {
		from, to State
		want     bool
	}{
		"discover":             {StateUnknown, StateDiscovered, true},
		"zero is unknown":      {"", StateDiscovered, true},
		"ready":                {StateDiscovered, StateReady, true},
		"provision":            {StateReady, StateProvisioning, true},
		"provisioned":          {StateProvisioning, StateProvisioned, true},
		"reinstall":            {StateProvisioned, StateProvisioning, true},
		"fail from anywhere":   {StateProvisioning, StateFailed, true},
		"retry after failure":  {StateFailed, StateProvisioning, true},
		"remove":               {StateProvisioned, StateDeprovisioning, true},
		"skip to provisioned":  {StateReady, StateProvisioned, false},
		"unknown to provision": {StateUnknown, StateProvisioning, false},
		"same state":           {StateReady, StateReady, false},
		"remove unknown":       {StateUnknown, StateDeprovisioning, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := CanTransition(tc.from, tc.to); got != tc.want {
				t.Errorf("CanTransition(%s, %s) = %v, want %v", tc.from, tc.to, got, tc.want)
			}
		})
	}
}

func TestSetStateHistory(t *testing.T) {
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	m := Machine{Name: "m"}
	if err := m.SetState(StateProvisioned, "skip", at); !errors.Is(err, ErrInvalid) {
		t.Fatalf("illegal move: got %v", err)
	}
	for i := 0; i < 100; i++ {
		to := StateProvisioning
		if m.State == StateProvisioning {
			to = StateProvisioned
		}
		if m.State == "" || m.State == StateUnknown {
			to = StateReady
		}
		if err := m.SetState(to, "loop", at.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if len(m.History) != maxTransitionHistory {
		t.Errorf("history length %d, want %d", len(m.History), maxTransitionHistory)
	}
	want := Transition{From: StateProvisioned, To: StateProvisioning, Cause: "loop", At: at.Add(99 * time.Second)}
	if diff := cmp.Diff(want, m.History[len(m.History)-1]); diff != "" {
		t.Errorf("last transition (-want +got):\n%s", diff)
	}
	if !m.Since().Equal(want.At) {
		t.Errorf("since %v", m.Since())
	}
}
