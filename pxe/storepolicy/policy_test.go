package storepolicy

import (
	stdcmp "cmp"
	"context"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/pxe"
)

func stores(t *testing.T) map[string]inventory.Store {
	t.Helper()
	out := map[string]inventory.Store{}
	for name, url := range map[string]string{
		"memory": "memory://",
		"bolt":   "file://" + filepath.Join(t.TempDir(), "state.db"),
	} {
		s, err := backend.Open(context.Background(), url, backend.Options{})
		if err != nil {
			t.Fatalf("open %s: %v", url, err)
		}
		t.Cleanup(func() { s.Close() })
		out[name] = s
	}
	return out
}

var (
	macWeb   = mustMAC("52:54:00:00:00:01")
	macNew   = mustMAC("52:54:00:00:00:99")
	discover = pxe.Intent{Action: pxe.ActionDiscover, Kernel: "/agent/vmlinuz", Initrd: []string{"/agent/initrd"}}
)

func mustMAC(s string) net.HardwareAddr {
	hw, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return hw
}

func TestPolicyFollowsStore(t *testing.T) {
	for name, store := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			m, err := store.PutMachine(ctx, inventory.Machine{
				Name: "web-01", MAC: macWeb.String(), State: inventory.StateReady,
				Identity: inventory.Identity{IP: netip.MustParseAddr("192.0.2.10"), Network: "lab", Hostname: "web"},
			})
			if err != nil {
				t.Fatal(err)
			}
			p, err := New(ctx, store, Options{Unknown: discover, TokenKey: []byte("k")})
			if err != nil {
				t.Fatal(err)
			}
			go p.Run(ctx)
			<-p.Synced()

			host, err := p.Host(ctx, macWeb)
			if err != nil {
				t.Fatal(err)
			}
			want := pxe.Host{Name: "web-01", MAC: macWeb, IP: net.ParseIP("192.0.2.10").To4(), Hostname: "web", Network: "lab"}
			if d := cmp.Diff(want, host); d != "" {
				t.Errorf("host (-want +got):\n%s", d)
			}
			// Not touched by the engine yet: no netboot, but a token.
			in, _ := p.Intent(ctx, macWeb)
			if in.Action != pxe.ActionNone || in.Token != pxe.Token([]byte("k"), macWeb) {
				t.Errorf("untouched machine's intent = %+v, want none with its token", in)
			}
			if mac, ok := p.MACOf(netip.MustParseAddr("192.0.2.10")); !ok || mac.String() != macWeb.String() {
				t.Errorf("MACOf(192.0.2.10) = %v, %v; want %v", mac, ok, macWeb)
			}
			// Unknown MACs boot discovery, and are unknown hosts to DHCP.
			if _, err := p.Host(ctx, macNew); !errors.Is(err, pxe.ErrUnknownHost) {
				t.Errorf("unknown host: err = %v", err)
			}
			if in, _ := p.Intent(ctx, macNew); in.Action != pxe.ActionDiscover {
				t.Errorf("unknown intent = %+v, want discover", in)
			}

			macs, changed := p.DeclaredMACs()
			if d := cmp.Diff([]string{macWeb.String()}, macStrings(macs)); d != "" {
				t.Errorf("declared MACs (-want +got):\n%s", d)
			}

			// The engine writes an intent: the policy sees it without a reload.
			m.Intent = inventory.BootIntent{Action: inventory.BootInstall, Kernel: "/agent/vmlinuz",
				Initrds: []string{"/agent/initrd"}, Cmdline: "console=ttyS0", Token: "t0k"}
			if _, err := store.PutMachine(ctx, m); err != nil {
				t.Fatal(err)
			}
			wantIntent := pxe.Intent{Action: pxe.ActionInstall, Kernel: "/agent/vmlinuz",
				Initrd: []string{"/agent/initrd"}, Cmdline: "console=ttyS0", Token: "t0k"}
			eventually(t, func() bool { in, _ := p.Intent(ctx, macWeb); return cmp.Equal(in, wantIntent) })
			select {
			case <-changed:
				t.Error("declared MACs said to change on an intent")
			default:
			}

			// Deleted from the store: unknown again.
			cur, _ := store.Machine(ctx, "web-01")
			if err := store.DeleteMachine(ctx, "web-01", cur.Revision); err != nil {
				t.Fatal(err)
			}
			eventually(t, func() bool { _, err := p.Host(ctx, macWeb); return errors.Is(err, pxe.ErrUnknownHost) })
			// Only then do the declared MACs change (not on the intent).
			<-changed
			if macs, _ := p.DeclaredMACs(); len(macs) != 0 {
				t.Errorf("declared MACs after the delete: %v", macs)
			}
			if mac, ok := p.MACOf(netip.MustParseAddr("192.0.2.10")); ok {
				t.Errorf("MACOf a deleted machine's address = %v", mac)
			}
		})
	}
}

func macStrings(macs []net.HardwareAddr) []string {
	var s []string
	for _, m := range macs {
		s = append(s, m.String())
	}
	return s
}

func eventually(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAppendMACIsString: the policy finds machines by the text
// appendMAC writes, which must be the text the store keys them by.
func TestAppendMACIsString(t *testing.T) {
	for name, mac := range map[string]net.HardwareAddr{
		"empty":      {},
		"ethernet":   mustMAC("52:54:00:ab:cd:ef"),
		"eui-64":     mustMAC("02:00:5e:10:00:00:00:01"),
		"infiniband": mustMAC("00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01"),
		"long":       make(net.HardwareAddr, 32),
	} {
		if got, want := string(appendMAC(nil, mac)), mac.String(); got != want {
			t.Errorf("%s: appendMAC = %q, want %q", name, got, want)
		}
	}
}

// TestTaskSecret: an intent with an agent task carries the task's secret,
// and is spent once the agent reported about that task.
func TestTaskSecret(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := stores(t)["memory"]
	secret := inventory.NewTaskSecret()
	if _, err := store.PutMachine(ctx, inventory.Machine{
		Name: "web-01", MAC: macWeb.String(), State: inventory.StateProvisioning,
		Intent: inventory.BootIntent{Action: inventory.BootInstall, Kernel: "/k",
			Task: &inventory.AgentTask{ID: "t1", Kind: inventory.TaskInstall, Secret: secret}},
	}); err != nil {
		t.Fatal(err)
	}
	p, err := New(ctx, store, Options{})
	if err != nil {
		t.Fatal(err)
	}
	go p.Run(ctx)
	<-p.Synced()
	in, _ := p.Intent(ctx, macWeb)
	if in.AgentSecret != secret || in.Spent {
		t.Fatalf("intent before the agent: secret %q spent %v, want the task's, not spent", in.AgentSecret, in.Spent)
	}
	if _, err := inventory.UpdateMachine(ctx, store, "web-01", func(m *inventory.Machine) error {
		m.Agent = &inventory.AgentStatus{TaskID: "t1", Phase: inventory.AgentRunning}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool {
		in, _ := p.Intent(ctx, macWeb)
		return in.Spent
	})
}

// TestNamedIntentIsIntentAndHost: NamedIntent, the script's one lookup,
// answers what Intent and Host's Name answer, for each kind of machine;
// and an intent's initrds are the policy's own copy, not the record's.
func TestNamedIntentIsIntentAndHost(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := stores(t)["memory"]
	install := inventory.BootIntent{Action: inventory.BootInstall, Kernel: "/k", Initrds: []string{"/i1", "/i2"}, Cmdline: "quiet"}
	task := &inventory.AgentTask{ID: "t1", Kind: inventory.TaskInstall, Secret: inventory.NewTaskSecret()}
	tests := map[string]struct {
		m        inventory.Machine
		wantName string
	}{
		"untouched": {m: inventory.Machine{Name: "ready", MAC: "52:54:00:00:01:01", State: inventory.StateReady}, wantName: "ready"},
		"discovered": {m: inventory.Machine{Name: "disc", MAC: "52:54:00:00:01:02", State: inventory.StateDiscovered},
			wantName: "disc"},
		"install": {m: inventory.Machine{Name: "inst", MAC: "52:54:00:00:01:03", State: inventory.StateProvisioning, Intent: install},
			wantName: "inst"},
		"task": {m: inventory.Machine{Name: "task", MAC: "52:54:00:00:01:04", State: inventory.StateProvisioning,
			Intent: inventory.BootIntent{Action: inventory.BootInstall, Kernel: "/k", Task: task}}, wantName: "task"},
		"task spent": {m: inventory.Machine{Name: "spent", MAC: "52:54:00:00:01:05", State: inventory.StateProvisioning,
			Intent: inventory.BootIntent{Action: inventory.BootInstall, Kernel: "/k", Task: task},
			Agent:  &inventory.AgentStatus{TaskID: "t1", Phase: inventory.AgentRunning}}, wantName: "spent"},
		"unknown": {},
	}
	for _, tc := range tests {
		if tc.m.Name != "" {
			if _, err := store.PutMachine(ctx, tc.m); err != nil {
				t.Fatal(err)
			}
		}
	}
	p, err := New(ctx, store, Options{Unknown: discover, TokenKey: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			mac := stdcmp.Or(tc.m.MAC, "52:54:00:00:01:99")
			in, err := p.Intent(ctx, mustMAC(mac))
			if err != nil {
				t.Fatal(err)
			}
			gotIn, gotName, err := p.NamedIntent(ctx, mustMAC(mac))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(in, gotIn); d != "" {
				t.Errorf("NamedIntent's intent (-Intent +NamedIntent):\n%s", d)
			}
			h, _ := p.Host(ctx, mustMAC(mac))
			if gotName != h.Name || gotName != tc.wantName {
				t.Errorf("NamedIntent's name %q, Host's %q, want %q", gotName, h.Name, tc.wantName)
			}
			if m, ok := p.Machine(mustMAC(mac)); ok && len(m.Intent.Initrds) > 0 && &m.Intent.Initrds[0] == &in.Initrd[0] {
				t.Error("the intent's initrds are the record's slice")
			}
		})
	}
}
