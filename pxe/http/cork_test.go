package http

import (
	"bytes"
	"log/slog"
	"net"
	nethttp "net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCorkedFilesToCurl: a corked file body changes nothing a client
// sees. curl fetches the image whole, a range, two ranges, its headers
// alone and a conditional GET, each followed by a script on the same
// connection: the script comes back whole after the file, on no new
// connection.
func TestCorkedFilesToCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl not found: install the Debian package curl")
	}
	const size = 8 << 20
	ts := startServer(t)
	data := bytes.Repeat([]byte("metal image "), size/12+1)[:size]
	must(t, os.WriteFile(filepath.Join(ts.files, "image.raw"), data, 0o644))
	_, hdr := get(t, clientFrom("127.0.0.1"), ts.url+"/files/image.raw", nil)
	script, _ := get(t, clientFrom("127.0.0.1"), ts.url+"/ipxe/"+macLocal, nil)
	if script.Status != 200 {
		t.Fatalf("script: status %d", script.Status)
	}
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		args []string
		// status is the file's; want its body (nil: none), or with
		// contains, strings its body holds.
		status   string
		want     []byte
		contains []string
	}{
		"whole":        {status: "200", want: data},
		"range":        {args: []string{"-r", "1000-5000999"}, status: "206", want: data[1000:5001000]},
		"two ranges":   {args: []string{"-r", "0-9,4000000-4000009"}, status: "206", contains: []string{"multipart/byteranges", string(data[:10]), string(data[4000000:4000010])}},
		"head":         {args: []string{"-I"}, status: "200", contains: []string{"Content-Length: 8388608"}},
		"not modified": {args: []string{"-H", "If-None-Match: " + hdr.Get("ETag")}, status: "304", want: []byte{}},
	} {
		t.Run(name, func(t *testing.T) {
			file, scr := filepath.Join(dir, name+".file"), filepath.Join(dir, name+".script")
			args := append([]string{"-sS", "-i", "-w", "%{http_code} %{num_connects}\n"}, tc.args...)
			args = append(args, "-o", file, ts.url+"/files/image.raw")
			// The second URL gets plain options: -r and -I are the file's.
			args = append(args, "--next", "-sS", "-w", "%{http_code} %{num_connects}\n", "-o", scr, ts.url+"/ipxe/"+macLocal)
			out, err := exec.Command("curl", args...).Output()
			if err != nil {
				t.Fatalf("curl %v: %v\n%s", args, err, out)
			}
			if got, want := string(out), tc.status+" 1\n200 0\n"; got != want {
				t.Errorf("status and new connections of file and script: %q, want %q", got, want)
			}
			got, err := os.ReadFile(file)
			must(t, err)
			// -i puts the header before the body.
			_, body, ok := bytes.Cut(got, []byte("\r\n\r\n"))
			if !ok {
				t.Fatalf("no header in %q", got[:min(len(got), 200)])
			}
			if tc.want != nil && !bytes.Equal(body, tc.want) {
				t.Errorf("body %d bytes, want %d", len(body), len(tc.want))
			}
			for _, s := range tc.contains {
				if !bytes.Contains(got, []byte(s)) {
					t.Errorf("answer lacks %q", s)
				}
			}
			if b, _ := os.ReadFile(scr); string(b) != script.Body {
				t.Errorf("script after the file: %q, want %q", b, script.Body)
			}
		})
	}
}

// TestCorkReachesTheSocket: a request net/http serves (here through an
// Extra handler, on a connection the script connections handed over)
// finds its TCP socket, corks it and uncorks it. Without the socket the
// bodies would go out uncorked, which no client can tell.
func TestCorkReachesTheSocket(t *testing.T) {
	got := make(chan []int, 1)
	h := nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		tc, _ := r.Context().Value(connKey{}).(*net.TCPConn)
		if tc == nil {
			got <- nil
			return
		}
		uncork := cork(r)
		corked := sockoptInt(t, tc, unix.IPPROTO_TCP, unix.TCP_CORK)
		uncork()
		got <- []int{corked, sockoptInt(t, tc, unix.IPPROTO_TCP, unix.TCP_CORK)}
	})
	addr := serveConfig(t, Config{Policy: &policy{}, Extra: map[string]nethttp.Handler{"GET /corktest": h}, Logger: slog.New(slog.DiscardHandler)})
	get(t, clientFrom("127.0.0.1"), "http://"+addr+"/corktest", nil)
	if v := <-got; v == nil {
		t.Fatal("the request's context holds no TCP connection: file bodies go out uncorked")
	} else if v[0] == 0 || v[1] != 0 {
		t.Fatalf("TCP_CORK %d while corked, %d after, want on then 0", v[0], v[1])
	}
}

func sockoptInt(t *testing.T, tc *net.TCPConn, level, opt int) int {
	t.Helper()
	rc, err := tc.SyscallConn()
	must(t, err)
	var v int
	var gerr error
	must(t, rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), level, opt) }))
	must(t, gerr)
	return v
}
