package sse_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/daemon/internal/sse"
)

func TestWrite(t *testing.T) {
	for name, tc := range map[string]struct {
		id, event string
		v         any
		want      string
	}{
		"json":          {"7", "event", map[string]int{"seq": 7}, "id: 7\nevent: event\ndata: {\"seq\":7}\n\n"},
		"string lines":  {"", "html", "<tr>\r\n<td>x</td>\n</tr>", "event: html\ndata: <tr>\ndata: <td>x</td>\ndata: </tr>\n\n"},
		"bare":          {"", "", "hi", "data: hi\n\n"},
		"injected line": {"", "problem", "a\n\nevent: evil", "event: problem\ndata: a\ndata: \ndata: event: evil\n\n"},
	} {
		t.Run(name, func(t *testing.T) {
			var b strings.Builder
			if err := sse.Write(&b, tc.id, tc.event, tc.v); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, b.String()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestStream(t *testing.T) {
	rec := httptest.NewRecorder()
	st := sse.Start(rec)
	if err := st.Send("1", "event", "x"); err != nil {
		t.Fatal(err)
	}
	if err := st.KeepAlive(); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "text/event-stream" || !rec.Flushed {
		t.Errorf("status %d, type %q, flushed %v", rec.Code, rec.Header().Get("Content-Type"), rec.Flushed)
	}
	if diff := cmp.Diff("id: 1\nevent: event\ndata: x\n\n: keep-alive\n\n", rec.Body.String()); diff != "" {
		t.Errorf("body (-want +got):\n%s", diff)
	}
}
