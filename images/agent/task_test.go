package agent

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe/agentapi"
	"github.com/metal-dev/metal/pxe/storeagent"
)

func mustMAC(s string) net.HardwareAddr {
	hw, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return hw
}

// rig is metal's side (a real store behind the real agent protocol, and an
// image server) and a machine whose one disk, vda, is a 4 MiB file.
type rig struct {
	store  inventory.Store
	images *http.ServeMux
	worker *Worker
	disk   string
	seed   string
}

const diskSize = 4 << 20

func newRig(t *testing.T) *rig {
	t.Helper()
	ctx := context.Background()
	store, err := inventory.Open(ctx, inventory.NewMemoryKV(), inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	mac := mustMAC("52:54:00:00:00:01")
	if _, err := store.PutMachine(ctx, inventory.Machine{Name: "web-01", MAC: mac.String()}); err != nil {
		t.Fatal(err)
	}
	api, err := storeagent.New(storeagent.Config{Store: store, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{store: store, images: http.NewServeMux()}
	mux := http.NewServeMux()
	mux.Handle(agentapi.Prefix, api)
	mux.Handle("/images/", r.images)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)

	root := t.TempDir()
	sys := filepath.Join(root, "sys/block/vda")
	must(t, os.MkdirAll(sys, 0o755))
	must(t, os.WriteFile(filepath.Join(sys, "size"), []byte("8192\n"), 0o644))
	dev := filepath.Join(root, "dev")
	must(t, os.MkdirAll(dev, 0o755))
	r.disk = filepath.Join(dev, "vda")
	// The disk holds an old system: 0xAA everywhere.
	must(t, os.WriteFile(r.disk, bytes.Repeat([]byte{0xAA}, diskSize), 0o644))
	r.seed = filepath.Join(root, "seed-root")
	r.worker = &Worker{
		Client:  &agentapi.Client{BaseURL: hs.URL, MAC: mac, Token: rigSecret},
		Log:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		SysRoot: root, DevDir: dev, ProgressEvery: 10 * time.Millisecond,
		Seed: func(_ context.Context, _ string, task agentapi.Task, _ *slog.Logger) (string, error) {
			return r.seed, WriteToRoot(r.seed, task)
		},
	}
	return r
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// rigSecret is every task's secret in the rig, as the agent read it on
// its kernel command line.
var rigSecret = strings.Repeat("ab", 32)

// give writes task into web-01's intent, as the converge engine does.
func (r *rig) give(t *testing.T, task agentapi.Task) {
	t.Helper()
	var rec inventory.AgentTask // the same JSON
	b, err := json.Marshal(task)
	must(t, err)
	must(t, json.Unmarshal(b, &rec))
	rec.Secret = rigSecret
	_, err = inventory.UpdateMachine(context.Background(), r.store, "web-01", func(m *inventory.Machine) error {
		m.Intent = inventory.BootIntent{Action: inventory.BootInstall, Task: &rec}
		return nil
	})
	must(t, err)
}

func (r *rig) status(t *testing.T) inventory.AgentStatus {
	t.Helper()
	m, err := r.store.Machine(context.Background(), "web-01")
	must(t, err)
	if m.Agent == nil {
		t.Fatal("no agent status stored")
	}
	return *m.Agent
}

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	must(t, zw.Close())
	return buf.Bytes()
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func TestInstall(t *testing.T) {
	r := newRig(t)
	image := bytes.Repeat([]byte("metal image "), 200000) // 2.4 MB raw
	body := gz(t, image)
	r.images.HandleFunc("/images/os.raw.gz", func(w http.ResponseWriter, _ *http.Request) {
		// Trickle it, so progress is reported along the way.
		for i := 0; i < len(body); i += 64 << 10 {
			w.Write(body[i:min(i+64<<10, len(body))])
			w.(http.Flusher).Flush()
			time.Sleep(5 * time.Millisecond)
		}
	})
	task := agentapi.Task{ID: "t1", Kind: agentapi.TaskInstall, ImageURL: "/images/os.raw.gz", Format: "gz",
		Checksum: sha(body), Hostname: "web-01", SSHAuthorizedKeys: []string{"ssh-ed25519 AAAA test"}, UserData: "#cloud-config\npackages: [htop]\n"}
	r.give(t, task)
	if err := r.worker.Run(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	if st := r.status(t); st.Phase != inventory.AgentDone || st.TaskID != "t1" {
		t.Errorf("status %+v, want done t1", st)
	}
	disk, _ := os.ReadFile(r.disk)
	if !bytes.Equal(disk[:len(image)], image) || disk[len(image)] != 0xAA {
		t.Errorf("disk does not hold the image followed by the old bytes")
	}
	meta, err := os.ReadFile(filepath.Join(r.seed, "var/lib/cloud/seed/nocloud/meta-data"))
	must(t, err)
	for _, want := range []string{`"local-hostname": "web-01"`, `"instance-id": "metal-t1"`, `"ssh-ed25519 AAAA test"`} {
		if !strings.Contains(string(meta), want) {
			t.Errorf("meta-data lacks %s:\n%s", want, meta)
		}
	}
	user, _ := os.ReadFile(filepath.Join(r.seed, "var/lib/cloud/seed/nocloud/user-data"))
	if string(user) != task.UserData {
		t.Errorf("user-data %q, want %q", user, task.UserData)
	}
	evs, _ := r.store.Events(context.Background(), inventory.EventQuery{Machine: "web-01"})
	var msgs []string
	for _, e := range evs {
		msgs = append(msgs, e.Message)
	}
	all := strings.Join(msgs, "\n")
	for _, step := range []string{"running (fetching)", "running (writing)", "running (seeding)", "done (rebooting)"} {
		if !strings.Contains(all, step) {
			t.Errorf("timeline lacks %q:\n%s", step, all)
		}
	}
}

func TestInstallFailures(t *testing.T) {
	image := bytes.Repeat([]byte{1, 2, 3, 4}, 100000)
	body := gz(t, image)
	corrupt := append([]byte(nil), body...)
	corrupt[len(corrupt)/2] ^= 0xFF
	cases := map[string]struct {
		task    agentapi.Task
		serve   []byte
		wantErr []string
		cleared bool
	}{
		"checksum mismatch": {
			task:    agentapi.Task{ImageURL: "/images/x.gz", Format: "gz", Checksum: sha(body)},
			serve:   corrupt,
			wantErr: []string{"checksum mismatch", sha(body), sha(corrupt)},
			cleared: true,
		},
		"no such disk": {
			task:    agentapi.Task{ImageURL: "/images/x.gz", Format: "gz", Checksum: sha(body), Disk: "/dev/sdz"},
			serve:   body,
			wantErr: []string{"disk /dev/sdz not found", "vda"},
		},
		"image missing": {
			task:    agentapi.Task{ImageURL: "/images/gone.gz", Format: "gz", Checksum: sha(body)},
			wantErr: []string{"404"},
		},
		"no checksum": {
			task:    agentapi.Task{ImageURL: "/images/x.gz", Format: "gz"},
			serve:   body,
			wantErr: []string{"without a checksum"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := newRig(t)
			if tc.serve != nil {
				r.images.HandleFunc("/images/x.gz", func(w http.ResponseWriter, _ *http.Request) { w.Write(tc.serve) })
			}
			tc.task.ID, tc.task.Kind = "t2", agentapi.TaskInstall
			r.give(t, tc.task)
			if err := r.worker.Run(context.Background(), tc.task); err == nil {
				t.Fatal("Run succeeded")
			}
			st := r.status(t)
			if st.Phase != inventory.AgentFailed {
				t.Errorf("phase %s, want failed", st.Phase)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(st.Error, want) {
					t.Errorf("stored error %q lacks %q", st.Error, want)
				}
			}
			disk, _ := os.ReadFile(r.disk)
			if tc.cleared && !bytes.Equal(disk[:wipeBytes], make([]byte, wipeBytes)) {
				t.Errorf("the disk's start was not cleared after a failed write")
			}
		})
	}
}

func TestWipe(t *testing.T) {
	r := newRig(t)
	task := agentapi.Task{ID: "w1", Kind: agentapi.TaskWipe}
	r.give(t, task)
	must(t, r.worker.Run(context.Background(), task))
	disk, _ := os.ReadFile(r.disk)
	zero := make([]byte, wipeBytes)
	if !bytes.Equal(disk[:wipeBytes], zero) || !bytes.Equal(disk[diskSize-wipeBytes:], zero) {
		t.Errorf("start and end of the disk not zeroed")
	}
	if disk[diskSize/2] != 0xAA {
		t.Errorf("the middle of the disk was written; wipe clears only the ends")
	}
	if st := r.status(t); st.Phase != inventory.AgentDone {
		t.Errorf("status %+v, want done", st)
	}
	// The erase record reached metal's server as an event.
	evs, err := r.store.Events(context.Background(), inventory.EventQuery{})
	must(t, err)
	var erased []inventory.EraseRecord
	for _, e := range evs {
		if e.Kind == inventory.EventErase && e.Erase != nil {
			erased = append(erased, *e.Erase)
		}
	}
	if len(erased) != 1 || erased[0].Method != inventory.WipeQuick || !erased[0].Verified || erased[0].Bytes != 2*wipeBytes {
		t.Errorf("erase events %+v, want one verified quick erase of %d bytes", erased, 2*wipeBytes)
	}
}
