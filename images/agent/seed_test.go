package agent

import (
	"os"
	"path/filepath"
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
