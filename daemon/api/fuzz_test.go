package api_test

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/daemon/api"
)

// FuzzDecodeAction feeds arbitrary bodies to the action decoder (seeds in
// testdata/fuzz/FuzzDecodeAction): it must never panic, and whatever it
// accepts must be a valid request that survives a JSON round trip.
func FuzzDecodeAction(f *testing.F) {
	f.Add([]byte(`{"action":"power-cycle","machine":"web-01","reason":"hung"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest("POST", "/api/v1/actions", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json; charset=utf-8")
		req, err := api.DecodeAction(r)
		if err != nil {
			return
		}
		if err := req.Validate(); err != nil {
			t.Fatalf("accepted an invalid request %+v: %v", req, err)
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		r2 := httptest.NewRequest("POST", "/api/v1/actions", bytes.NewReader(again))
		r2.Header.Set("Content-Type", "application/json")
		req2, err := api.DecodeAction(r2)
		if err != nil {
			t.Fatalf("re-encoded request %s refused: %v", again, err)
		}
		if diff := cmp.Diff(req, req2); diff != "" {
			t.Fatalf("round trip changed the request (-first +second):\n%s", diff)
		}
	})
}
