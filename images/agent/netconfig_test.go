package agent_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/metal-dev/metal/images/agent"
	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/pxe/agentapi"
	"github.com/metal-dev/metal/site"
)

const netSite = `
network "rack1" {
  interface = "eth0"
  subnet    = "10.10.0.0/24"
  gateway   = "10.10.0.1"
  dns       = ["10.10.0.2"]
  domain    = "ams1.example"
}
machine "db-1" {
  mac       = "52:54:00:00:00:01"
  ip        = "10.10.0.21"
  interface = "eno1"
  bond "bond0" {
    interfaces = ["eno1", "eno2"]
    mode       = "802.3ad"
  }
  vlan "bond0.20" {
    id        = 20
    link      = "bond0"
    addresses = ["10.20.0.21/24"]
  }
  route {
    to  = "192.168.0.0/16"
    via = "10.20.0.254"
  }
}
`

// seedNetworkConfig writes the seed of the site's machine db-1 as the
// agent does and returns the path of its network-config.
func seedNetworkConfig(t *testing.T, src string) string {
	t.Helper()
	nc := networkConfig(t, src)
	root := t.TempDir()
	if err := agent.WriteToRoot(root, agentapi.Task{ID: "t1", Hostname: "db-1", NetworkConfig: string(nc)}); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "var/lib/cloud/seed/nocloud/network-config")
}

// networkConfig is the NoCloud network-config of the site's first
// machine, as the engine gives it to the agent.
func networkConfig(t *testing.T, src string) []byte {
	t.Helper()
	res, diags := site.Load("site.hcl", []byte("site \"t\" {}\n"+src), site.Options{})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	m := res.Site.Machines[0]
	cfg := m.NetworkConfig(res.Site.Network(m.Network))
	if cfg == nil {
		return nil
	}
	nc, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return nc
}

var cloudInitOnce struct {
	sync.Once
	dir string
	err error
}

// cloudInit returns a tree holding Debian's cloud-init package unpacked
// (apt-get download and dpkg-deb -x, cached in the user's cache
// directory), so cloud-init runs from it with the host's python3 and is
// never installed, nor its services enabled, on this host. Its python
// dependencies are in the Makefile's TEST_PACKAGES.
func cloudInit(t *testing.T) string {
	t.Helper()
	testenv.Integration(t, "Debian's cloud-init package (apt-get download)")
	cloudInitOnce.Do(func() {
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		dir := filepath.Join(cache, "metal-test", "cloud-init")
		if _, err := os.Stat(filepath.Join(dir, "usr/bin/cloud-init")); err == nil {
			cloudInitOnce.dir = dir
			return
		}
		dl, err := os.MkdirTemp("", "cloud-init-deb-")
		if err != nil {
			cloudInitOnce.err = err
			return
		}
		defer os.RemoveAll(dl)
		cmd := exec.Command("apt-get", "download", "cloud-init")
		cmd.Dir = dl
		if out, err := cmd.CombinedOutput(); err != nil {
			cloudInitOnce.err = &exec.Error{Name: "apt-get download cloud-init: " + string(out), Err: err}
			return
		}
		debs, _ := filepath.Glob(filepath.Join(dl, "cloud-init_*.deb"))
		if len(debs) != 1 {
			cloudInitOnce.err = os.ErrNotExist
			return
		}
		os.MkdirAll(filepath.Dir(dir), 0o755)
		tmp := dir + ".tmp"
		os.RemoveAll(tmp)
		if out, err := exec.Command("dpkg-deb", "-x", debs[0], tmp).CombinedOutput(); err != nil {
			cloudInitOnce.err = &exec.Error{Name: "dpkg-deb -x: " + string(out), Err: err}
			return
		}
		os.RemoveAll(dir)
		cloudInitOnce.err = os.Rename(tmp, dir)
		cloudInitOnce.dir = dir
	})
	if cloudInitOnce.err != nil {
		t.Fatalf("cloud-init from Debian's package: %v", cloudInitOnce.err)
	}
	return cloudInitOnce.dir
}

// netConvert runs `cloud-init devel net-convert` on a NoCloud
// network-config and returns the files it rendered, by path.
func netConvert(t *testing.T, cfg, distro, output string) map[string]string {
	t.Helper()
	ci := cloudInit(t)
	out := t.TempDir()
	// Debian's python3, not one a PATH may put first: the python
	// packages cloud-init needs are Debian's.
	cmd := exec.Command("/usr/bin/python3", filepath.Join(ci, "usr/bin/cloud-init"),
		"devel", "net-convert", "-p", cfg, "-k", "yaml", "-d", out, "-D", distro, "-O", output)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+filepath.Join(ci, "usr/lib/python3/dist-packages"))
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cloud-init net-convert: %v\n%s", err, b)
	}
	t.Logf("cloud-init net-convert -O %s:\n%s", output, b)
	files := map[string]string{}
	filepath.WalkDir(out, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			c, _ := os.ReadFile(p)
			files[strings.TrimPrefix(p, out)] = string(c)
		}
		return nil
	})
	return files
}

func TestNetworkConfigCloudInit(t *testing.T) {
	cfg := seedNetworkConfig(t, netSite)

	eni := netConvert(t, cfg, "debian", "eni")["/etc/network/interfaces.d/50-cloud-init"]
	t.Logf("ENI:\n%s", eni)
	for _, want := range []string{
		"iface eno1 inet manual\n    bond-master bond0\n    bond-mode 802.3ad",
		"iface eno2 inet manual\n    bond-master bond0",
		"iface bond0 inet static\n    address 10.10.0.21/24",
		"dns-nameservers 10.10.0.2",
		"dns-search ams1.example",
		"post-up route add default gw 10.10.0.1",
		"iface bond0.20 inet static\n    address 10.20.0.21/24",
		"vlan-raw-device bond0",
		"vlan_id 20",
		"route add -net 192.168.0.0/16 gw 10.20.0.254",
	} {
		if !strings.Contains(eni, want) {
			t.Errorf("ENI lacks %q", want)
		}
	}

	netplan := netConvert(t, cfg, "ubuntu", "netplan")["/etc/netplan/50-cloud-init.yaml"]
	t.Logf("netplan:\n%s", netplan)
	for _, want := range []string{
		"bond0:\n            addresses:\n            - 10.10.0.21/24",
		"mode: 802.3ad",
		"- eno1\n            - eno2",
		"bond0.20:\n            addresses:\n            - 10.20.0.21/24\n            id: 20\n            link: bond0",
		"macaddress: '52:54:00:00:00:01'",
		"to: 192.168.0.0/16\n                via: 10.20.0.254",
	} {
		if !strings.Contains(netplan, want) {
			t.Errorf("netplan lacks %q", want)
		}
	}
}

func TestNoNetworkConfigForDHCP(t *testing.T) {
	cfg := seedNetworkConfig(t, `
network "rack1" {
  interface = "eth0"
  subnet    = "10.10.0.0/24"
  pool      = "10.10.0.100-10.10.0.199"
}
machine "db-1" {
  mac = "52:54:00:00:00:01"
}
`)
	if _, err := os.Stat(cfg); !os.IsNotExist(err) {
		t.Errorf("a machine taking DHCP has a network-config: %v", err)
	}
}

// TestNetworkConfigIPv6CloudInit: a machine of an IPv6-only network
// gets its ip6 with the subnet6's prefix and no DHCPv4; one of a
// dual-stack network gets both addresses; gateway6 and dns6 become its
// IPv6 default route and name servers. cloud-init renders them as
// Debian's and Ubuntu's network configuration.
func TestNetworkConfigIPv6CloudInit(t *testing.T) {
	tests := map[string]struct {
		src          string
		eni, netplan []string
		notENI       []string
	}{
		"IPv6 only": {
			src: `
network "v6" {
  interface = "eth0"
  subnet6   = "2001:db8:0:1::/64"
}
machine "db-1" {
  mac = "52:54:00:00:00:01"
  ip6 = "2001:db8:0:1::21"
}
`,
			eni:     []string{"inet6 static\n    address 2001:db8:0:1::21/64"},
			notENI:  []string{"inet dhcp"},
			netplan: []string{"addresses:\n            - 2001:db8:0:1::21/64", "dhcp4: false"},
		},
		"dual stack": {
			src: `
network "rack1" {
  interface = "eth0"
  subnet    = "10.10.0.0/24"
  subnet6   = "2001:db8:0:1::/64"
}
machine "db-1" {
  mac = "52:54:00:00:00:01"
  ip  = "10.10.0.21"
  ip6 = "2001:db8:0:1::21"
}
`,
			eni:     []string{"inet static\n    address 10.10.0.21/24", "inet6 static\n    address 2001:db8:0:1::21/64"},
			netplan: []string{"addresses:\n            - 10.10.0.21/24\n            - 2001:db8:0:1::21/64"},
		},
		"IPv6 only with gateway6 and dns6": {
			src: `
network "v6" {
  interface = "eth0"
  subnet6   = "2001:db8:0:1::/64"
  gateway6  = "2001:db8:0:1::1"
  dns6      = ["2001:db8:0:1::53", "2001:db8::53"]
  domain    = "ams1.example"
}
machine "db-1" {
  mac = "52:54:00:00:00:01"
  ip6 = "2001:db8:0:1::21"
}
`,
			eni: []string{"inet6 static\n    address 2001:db8:0:1::21/64", "dns-nameservers 2001:db8:0:1::53 2001:db8::53",
				"dns-search ams1.example", "gateway 2001:db8:0:1::1"},
			notENI: []string{"::/64 gw"},
			netplan: []string{"gateway6: 2001:db8:0:1::1",
				"nameservers:\n                addresses:\n                - 2001:db8:0:1::53\n                - 2001:db8::53"},
		},
		"dual stack with both gateways, link-local gateway6": {
			src: `
network "rack1" {
  interface = "eth0"
  subnet    = "10.10.0.0/24"
  gateway   = "10.10.0.1"
  dns       = ["10.10.0.2"]
  subnet6   = "2001:db8:0:1::/64"
  gateway6  = "fe80::1"
  dns6      = ["2001:db8::53"]
}
machine "db-1" {
  mac = "52:54:00:00:00:01"
  ip  = "10.10.0.21"
  ip6 = "2001:db8:0:1::21"
}
`,
			eni: []string{"route add default gw 10.10.0.1", "inet6 static\n    address 2001:db8:0:1::21/64\n    gateway fe80::1",
				"dns-nameservers 10.10.0.2 2001:db8::53"},
			netplan: []string{"to: 0.0.0.0/0\n                via: 10.10.0.1", "gateway6: fe80::1"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := seedNetworkConfig(t, tc.src)
			eni := netConvert(t, cfg, "debian", "eni")["/etc/network/interfaces.d/50-cloud-init"]
			for _, want := range tc.eni {
				if !strings.Contains(eni, want) {
					t.Errorf("ENI lacks %q:\n%s", want, eni)
				}
			}
			for _, bad := range tc.notENI {
				if strings.Contains(eni, bad) {
					t.Errorf("ENI has %q:\n%s", bad, eni)
				}
			}
			netplan := netConvert(t, cfg, "ubuntu", "netplan")["/etc/netplan/50-cloud-init.yaml"]
			for _, want := range tc.netplan {
				if !strings.Contains(netplan, want) {
					t.Errorf("netplan lacks %q:\n%s", want, netplan)
				}
			}
		})
	}
}
