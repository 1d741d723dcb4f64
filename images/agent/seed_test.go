package agent

import (
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metal-dev/metal/pxe/agentapi"
)

// The phone-home goes to vendor-data, readable by root only, and leaves
// the site's user-data as given.
func TestSeedPhoneHome(t *testing.T) {
	root := t.TempDir()
	task := agentapi.Task{ID: "t1", Hostname: "web-01", UserData: "#!/bin/sh\necho hi\n",
		PhoneHome: "http://192.0.2.1:8080/agent/v1/52:54:00:00:00:01/ready/s3cret"}
	if err := WriteToRoot(root, task); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, seedDir)
	want := `#cloud-config
{
  "phone_home": {
    "post": [
      "instance_id",
      "hostname",
      "fqdn"
    ],
    "tries": 20,
    "url": "http://192.0.2.1:8080/agent/v1/52:54:00:00:00:01/ready/s3cret"
  }
}
`
	got, err := os.ReadFile(filepath.Join(dir, "vendor-data"))
	if err != nil || string(got) != want {
		t.Errorf("vendor-data: %v\n%s\nwant\n%s", err, got, want)
	}
	if fi, err := os.Stat(filepath.Join(dir, "vendor-data")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("vendor-data mode: %v %v", fi.Mode(), err)
	}
	if ud, _ := os.ReadFile(filepath.Join(dir, "user-data")); string(ud) != task.UserData {
		t.Errorf("user-data changed: %q", ud)
	}

	// No phone-home asked: no vendor-data.
	root = t.TempDir()
	task.PhoneHome = ""
	if err := WriteToRoot(root, task); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, seedDir, "vendor-data")); !os.IsNotExist(err) {
		t.Errorf("vendor-data written without a phone-home: %v", err)
	}
}

// With other metal serves to try, vendor-data is a MIME multipart: the
// same phone_home, and a script that posts to the URLs in order until one
// takes it; run here by sh (with curl or wget), the first refuses
// connections (its serve died) and the second gets the post.
func TestSeedPhoneHomeFallback(t *testing.T) {
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		got <- r.Method + " " + r.URL.Path + " " + r.PostForm.Get("hostname")
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	task := agentapi.Task{ID: "t1", PhoneHome: deadURL + "/agent/v1/m/ready/s1",
		PhoneHomeAlso: []string{srv.URL + "/agent/v1/m/ready/s1"}}
	vd, err := VendorData(task)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(vd))
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	parts := map[string]string{}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			break
		}
		b, _ := io.ReadAll(p)
		parts[p.Header.Get("Content-Type")] = string(b)
	}
	if !strings.Contains(parts["text/cloud-config"], `"url": "`+task.PhoneHome+`"`) {
		t.Errorf("cloud-config part:\n%s", parts["text/cloud-config"])
	}
	script := filepath.Join(t.TempDir(), "phone-home")
	if err := os.WriteFile(script, []byte(parts["text/x-shellscript"]), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sh", script).CombinedOutput(); err != nil {
		t.Fatalf("phone-home script: %v\n%s\n%s", err, out, parts["text/x-shellscript"])
	}
	host, _ := os.Hostname()
	if p := <-got; p != "POST /agent/v1/m/ready/s1 "+host {
		t.Errorf("the live serve got %q", p)
	}
}
