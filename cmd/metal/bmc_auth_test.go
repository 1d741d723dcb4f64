package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc/virtual"
)

// TestBMCVerbsWithoutSessions runs every `metal bmc` verb against Redfish
// services that have no SessionService and take HTTP Basic auth only (or
// no auth at all), with a one-letter password: each verb works, says it
// used Basic auth, and no message is mangled by redaction.
//
// The peers are metal's virtual BMC in the modes that copy sushy-tools
// (OpenStack's Redfish emulator) with and without its auth file, and,
// when METAL_SUSHY_TOOLS names a sushy-tools source tree, sushy-tools
// itself with its fake driver (run by Debian's python3 with python3-flask,
// python3-tenacity, python3-bcrypt and python3-webob). sushy-tools is not
// packaged for Debian, so the test cannot install it.
func TestBMCVerbsWithoutSessions(t *testing.T) {
	const user, password = "admin", "x"
	peers := map[string]func(t *testing.T) bmcPeer{
		"virtual BMC, basic auth only": func(t *testing.T) bmcPeer {
			return vbmcPeer(t, virtual.Options{Username: user, Password: password, Auth: virtual.AuthBasicOnly})
		},
		"virtual BMC, no auth": func(t *testing.T) bmcPeer {
			return vbmcPeer(t, virtual.Options{Auth: virtual.AuthNone})
		},
		"sushy-tools fake driver": func(t *testing.T) bmcPeer {
			return bmcPeer{addr: startSushy(t, "", "")}
		},
		"sushy-tools fake driver, auth file": func(t *testing.T) bmcPeer {
			return bmcPeer{addr: startSushy(t, user, password)}
		},
	}
	for _, name := range []string{"virtual BMC, basic auth only", "virtual BMC, no auth", "sushy-tools fake driver", "sushy-tools fake driver, auth file"} {
		t.Run(name, func(t *testing.T) {
			p := peers[name](t)
			dir := t.TempDir()
			sitePath := filepath.Join(dir, "site.hcl")
			if err := os.WriteFile(sitePath, []byte(fmt.Sprintf(`
site "nosess" {}
network "lab" {
  interface = "lo"
  subnet    = "192.0.2.0/24"
}
machine "m1" {
  mac = "52:54:00:00:00:31"
  bmc {
    protocol = "redfish"
    address  = "http://%s"
    username = "%s"
    password = "%s"
  }
}
`, p.addr, user, password)), 0o644); err != nil {
				t.Fatal(err)
			}
			type result struct {
				Power, Auth, AuthReason, Error string
				Inventory                      *struct{ MACs []string }
			}
			run := func(args ...string) result {
				t.Helper()
				args = append(append([]string{"bmc"}, args...), "--site", sitePath, "--timeout", "60s", "--json")
				code, stdout, stderr := metal(t, nil, args...)
				var rs []struct {
					result
					AuthReason string `json:"auth_reason"`
				}
				if err := json.Unmarshal([]byte(stdout), &rs); err != nil || len(rs) != 1 {
					t.Fatalf("metal %s: exit %d: %v\n%s\n%s", strings.Join(args, " "), code, err, stdout, stderr)
				}
				r := rs[0].result
				r.AuthReason = rs[0].AuthReason
				if code != 0 || r.Error != "" {
					t.Fatalf("metal %s: exit %d: %s\n%s", strings.Join(args, " "), code, r.Error, stderr)
				}
				if r.Auth != "basic" || !strings.Contains(r.AuthReason, "no SessionService") {
					t.Errorf("metal %s: auth %q (%s), want basic because there is no SessionService", strings.Join(args, " "), r.Auth, r.AuthReason)
				}
				out := stdout + stderr
				if strings.Contains(out, "REDACTED") || strings.Contains(out, base64.StdEncoding.EncodeToString([]byte(user+":"+password))) {
					t.Errorf("metal %s: output mangled or leaking:\n%s", strings.Join(args, " "), out)
				}
				return r
			}
			run("status")
			if r := run("on"); r.Power != "on" {
				t.Errorf("on: power %q", r.Power)
			}
			run("bootdev", "pxe")
			if r := run("cycle"); r.Power != "on" {
				t.Errorf("cycle: power %q", r.Power)
			}
			if r := run("inventory"); r.Inventory == nil || len(r.Inventory.MACs) == 0 {
				t.Errorf("inventory: %+v", r.Inventory)
			}
			if r := run("off"); r.Power != "off" {
				t.Errorf("off: power %q", r.Power)
			}
			if r := run("status"); r.Power != "off" {
				t.Errorf("status after off: %q", r.Power)
			}
			if p.boots != nil {
				if b := p.boots(); len(b) != 2 || b[1].Target != "Pxe" {
					t.Errorf("boots = %+v, want the power on's, then the cycle's from PXE", b)
				}
			}
		})
	}
}

// bmcPeer is a Redfish service under test: its host:port, and for metal's
// virtual BMC the boots its simulated machine made.
type bmcPeer struct {
	addr  string
	boots func() []virtual.Boot
}

// vbmcPeer serves metal's virtual BMC for one simulated machine on a
// loopback port until the test ends.
func vbmcPeer(t *testing.T, opts virtual.Options) bmcPeer {
	t.Helper()
	sim := virtual.NewSim(virtual.SimOptions{Name: "m1"})
	srv, err := virtual.NewServer(opts, virtual.MachineSpec{Name: "m1", Machine: sim, Serial: "M1", MACs: []string{"52:54:00:00:00:31"}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	return bmcPeer{addr: ln.Addr().String(), boots: sim.Boots}
}

// startSushy runs sushy-tools' emulator with its fake driver on a loopback
// port until the test ends; with user set, behind an auth file holding
// user's bcrypt-hashed password. It skips the test, saying why, unless
// METAL_SUSHY_TOOLS names a sushy-tools source tree.
func startSushy(t *testing.T, user, password string) string {
	t.Helper()
	src := os.Getenv("METAL_SUSHY_TOOLS")
	if src == "" {
		t.Skip("sushy-tools is not packaged for Debian: set METAL_SUSHY_TOOLS to a sushy-tools source tree to run this peer")
	}
	// Debian's python3, which has the modules sushy-tools needs; not a
	// python3 of pyenv or a venv that may come first on PATH.
	python := "/usr/bin/python3"
	for _, mod := range []string{"flask", "tenacity", "bcrypt", "webob", "pbr"} {
		if err := exec.Command(python, "-c", "import "+mod).Run(); err != nil {
			t.Fatalf("sushy-tools needs python3-%s: apt-get install -y python3-%s", mod, mod)
		}
	}
	dir := t.TempDir()
	addr := freeTCPAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	args := []string{"-m", "sushy_tools.emulator.main", "--fake", "-i", host, "-p", port}
	if user != "" {
		hash, err := exec.Command(python, "-c", "import bcrypt, sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(4)).decode())", password).Output()
		if err != nil {
			t.Fatal(err)
		}
		authFile := filepath.Join(dir, "htpasswd")
		conf := filepath.Join(dir, "sushy.conf")
		if err := os.WriteFile(authFile, []byte(user+":"+strings.TrimSpace(string(hash))+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(conf, []byte(fmt.Sprintf("SUSHY_EMULATOR_AUTH_FILE = %q\n", authFile)), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", conf)
	}
	cmd := exec.Command(python, args...)
	cmd.Dir = src
	// pbr wants a version when the tree is not an installed package.
	cmd.Env = append(os.Environ(), "PBR_VERSION=0.0.0")
	logFile, err := os.Create(filepath.Join(dir, "sushy.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("sushy-tools log:\n%s", b)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logFile.Name())
			t.Fatalf("sushy-tools did not listen on %s:\n%s", addr, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
