package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe/pxetest"
)

// TestRogueOnBootNetwork: a victim machine netboots for an agent task and
// its agent starts; then it is powered off, and a rogue host takes its
// leased address, and another takes its address and its MAC. Neither gets
// the boot script (a replay: the one-time secret was used), the task (user
// data, SSH keys) or any change to the victim's record; their attempts are
// security events. The victim comes back and finishes its task.
func TestRogueOnBootNetwork(t *testing.T) {
	pxetest.RequireTool(t, "busybox", "busybox-static")
	pxetest.RequireTool(t, "curl", "curl")
	metalBin := buildMetal(t)
	lab := pxetest.NewLab(t)
	victim := lab.AddHost("m1", pxetest.MAC(1))
	rogueIP := lab.AddHost("r1", pxetest.MAC(7))
	rogueMAC := lab.AddHost("r2", pxetest.MAC(1))
	rogueMAC.MustIP("link", "set", "eth0", "down")

	dir := t.TempDir()
	sitePath := labSite(t, dir, "rogue", fmt.Sprintf(`
machine "m1" {
  mac = %q
  ip  = "192.0.2.11"
}
`, pxetest.MAC(1).String()))
	const userData = "#cloud-config\npassword: victim-only-hunter2\n"
	secret := inventory.NewTaskSecret()
	statePath := filepath.Join(dir, "state", "state.db")
	withStore(t, statePath, func(ctx context.Context, store inventory.Store) {
		if _, err := store.PutMachine(ctx, inventory.Machine{Name: "m1", MAC: pxetest.MAC(1).String(),
			State: inventory.StateProvisioning, Intent: inventory.BootIntent{Action: inventory.BootInstall,
				Kernel: "/files/agent/vmlinuz", Cmdline: "console=ttyS0 metal.url=http://192.0.2.1:8080",
				Task: &inventory.AgentTask{ID: "t1", Kind: inventory.TaskInstall, Image: "debian",
					SSHAuthorizedKeys: []string{"ssh-ed25519 AAAAvictimkey"}, UserData: userData, Secret: secret}}}); err != nil {
			t.Fatal(err)
		}
	})
	srv := lab.NS().Start(metalBin, "serve", "--tftp-addr", "192.0.2.1:69", sitePath)
	t.Cleanup(srv.Stop)

	const base = "http://192.0.2.1:8080"
	mac := pxetest.MAC(1).String()
	agent := base + "/agent/v1/" + mac
	// do runs curl in ns and returns the HTTP status and body.
	do := func(ns *pxetest.Netns, args ...string) (string, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		args = append([]string{"-s", "-w", "\n%{http_code}"}, args...)
		out, err := ns.Command(ctx, "curl", args...).Output()
		if err != nil {
			t.Fatalf("curl %v: %v", args, err)
		}
		body, code, _ := strings.Cut(string(out), "\n")
		if i := strings.LastIndexByte(string(out), '\n'); i >= 0 {
			body, code = string(out[:i]), string(out[i+1:])
		}
		return code, body
	}

	// The victim: its lease, its script (with the secret), its agent's
	// first calls.
	if env := leaseWithRetry(t, victim, srv); env["ip"] != "192.0.2.11" {
		t.Fatalf("victim leased %q, want 192.0.2.11", env["ip"])
	}
	code, script := do(victim, base+"/ipxe/"+mac)
	if code != "200" || !strings.Contains(script, "metal.token="+secret) {
		t.Fatalf("victim's script: HTTP %s\n%s\nwant it to carry the task's secret", code, script)
	}
	hdr := "X-Metal-Token: " + secret
	if code, body := do(victim, "-H", hdr, "-X", "POST", "-d", `{"cpu":{"model":"victim cpu"}}`, agent+"/facts"); code != "204" {
		t.Fatalf("victim's facts: HTTP %s %s", code, body)
	}
	if code, body := do(victim, "-H", hdr, agent+"/task"); code != "200" || !strings.Contains(body, "victim-only-hunter2") {
		t.Fatalf("victim's task: HTTP %s %s", code, body)
	}
	if code, body := do(victim, "-H", hdr, "-X", "POST", "-d", `{"task_id":"t1","phase":"running","step":"writing"}`, agent+"/status"); code != "204" {
		t.Fatalf("victim's status: HTTP %s %s", code, body)
	}

	// The victim powers off; the rogues take its place in turn.
	victim.MustIP("link", "set", "eth0", "down")
	rogueIP.MustIP("addr", "add", "192.0.2.11/24", "dev", "eth0")
	rogueMAC.MustIP("addr", "add", "192.0.2.11/24", "dev", "eth0")
	for name, rogue := range map[string]*pxetest.Netns{"rogue with the victim's address": rogueIP, "rogue with its address and MAC": rogueMAC} {
		other := rogueMAC
		if rogue == rogueMAC {
			other = rogueIP
		}
		other.MustIP("link", "set", "eth0", "down")
		rogue.MustIP("link", "set", "eth0", "up")
		attempts := map[string][]string{
			"script replay":  {base + "/ipxe/" + mac},
			"task":           {agent + "/task"},
			"task, guessed":  {"-H", "X-Metal-Token: " + strings.Repeat("0", 64), agent + "/task"},
			"status done":    {"-X", "POST", "-d", `{"task_id":"t1","phase":"done"}`, agent + "/status"},
			"status failed":  {"-X", "POST", "-d", `{"task_id":"t1","phase":"failed","error":"x"}`, agent + "/status"},
			"facts":          {"-X", "POST", "-d", `{"cpu":{"model":"rogue cpu"}}`, agent + "/facts"},
			"hyphenated MAC": {base + "/agent/v1/" + strings.ReplaceAll(mac, ":", "-") + "/task"},
		}
		for what, args := range attempts {
			code, body := do(rogue, args...)
			if code != "403" {
				t.Errorf("%s, %s: HTTP %s, want 403: %s", name, what, code, body)
			}
			for _, s := range []string{secret, "victim-only-hunter2", "AAAAvictimkey"} {
				if strings.Contains(body, s) {
					t.Errorf("%s, %s: the answer holds %q", name, what, s)
				}
			}
		}
		rogue.MustIP("link", "set", "eth0", "down")
	}

	// The victim comes back and finishes.
	victim.MustIP("link", "set", "eth0", "up")
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := do(victim, "-H", hdr, "-X", "POST", "-d", `{"task_id":"t1","phase":"done","step":"rebooting"}`, agent+"/status")
		if code == "204" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("victim's final report: HTTP %s %s", code, body)
		}
		time.Sleep(500 * time.Millisecond)
	}

	srv.Stop()
	withStore(t, statePath, func(ctx context.Context, store inventory.Store) {
		m, err := store.Machine(ctx, "m1")
		if err != nil {
			t.Fatal(err)
		}
		if m.Agent == nil || m.Agent.Phase != inventory.AgentDone || m.Agent.Step != "rebooting" {
			t.Errorf("victim's agent status %+v, want done (rebooting)", m.Agent)
		}
		if m.Hardware == nil || m.Hardware.CPU.Model != "victim cpu" {
			t.Errorf("victim's hardware %+v, want the victim's report", m.Hardware)
		}
		evs, err := store.Events(ctx, inventory.EventQuery{Machine: "m1"})
		if err != nil {
			t.Fatal(err)
		}
		var security []string
		for _, e := range evs {
			if e.Kind == inventory.EventSecurity {
				security = append(security, e.Message)
			}
			if strings.Contains(e.Message, secret) {
				t.Errorf("event holds the secret: %+v", e)
			}
		}
		if len(security) == 0 || !strings.Contains(strings.Join(security, "\n"), "replay") {
			t.Errorf("security events %q, want the refused agent calls and the script replay", security)
		}
	})
	if strings.Contains(srv.Log(), secret) {
		t.Errorf("metal serve's log holds the task secret")
	}
}
