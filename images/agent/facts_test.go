package agent

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/metal-dev/metal/pxe/agentapi"
)

// testdata/qemu is a copy of the /proc and /sys files the agent reads, as
// a QEMU machine with a virtio disk, a SATA disk, an NVMe disk, a CD-ROM,
// two NICs and a bridge shows them.
func TestFacts(t *testing.T) {
	got := Facts("testdata/qemu")
	want := agentapi.Hardware{
		CPU:         agentapi.CPU{Model: "QEMU Virtual CPU version 2.5+", Sockets: 1, Cores: 2, Threads: 2},
		MemoryBytes: 1013568 * 1024,
		Disks: []agentapi.Disk{
			{Name: "nvme0n1", Model: "Samsung SSD 980", Serial: "S64ANS0T1234", SizeBytes: 4194304 * 512},
			{Name: "sda", Model: "QEMU HARDDISK", Serial: "scsi0001", SizeBytes: 2097152 * 512},
			{Name: "vda", Serial: "metal-disk-0", SizeBytes: 131072 * 512, Rotational: true},
		},
		NICs: []agentapi.NIC{
			{Name: "eth0", MAC: "52:54:00:12:34:56", Driver: "virtio_net"},
			{Name: "eth1", MAC: "52:54:00:12:34:57", Driver: "e1000e", SpeedMbps: 1000},
		},
		DMI: agentapi.DMI{Vendor: "QEMU", Product: "Standard PC (i440FX + PIIX, 1996)", Serial: "SN-0042",
			UUID: "5d7e0c9a-8a1c-4e0e-9d3f-1f2e3d4c5b6a", BIOSVersion: "1.16.2-debian-1.16.2-1"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("facts (-want +got):\n%s", diff)
	}
}

func TestFactsOfNothing(t *testing.T) {
	if diff := cmp.Diff(agentapi.Hardware{}, Facts(t.TempDir())); diff != "" {
		t.Errorf("facts of an empty root (-want +got):\n%s", diff)
	}
}

func TestModuleOrder(t *testing.T) {
	cases := map[string]struct {
		dep     string
		want    []string
		wantErr string
	}{
		"virtio": {
			dep: `kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
`,
			want: []string{
				"kernel/net/core/failover.ko", "kernel/drivers/net/net_failover.ko",
				"kernel/drivers/virtio/virtio_ring.ko", "kernel/drivers/virtio/virtio.ko",
				"kernel/drivers/net/virtio_net.ko",
				"kernel/drivers/virtio/virtio_pci_modern_dev.ko", "kernel/drivers/virtio/virtio_pci.ko",
			},
		},
		"empty":    {dep: "\n# nothing\n"},
		"cycle":    {dep: "a.ko: b.ko\nb.ko: a.ko\n", wantErr: "cycle: a.ko → b.ko → a.ko"},
		"bad line": {dep: "no colon here\n", wantErr: "line 1"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			deps, err := ParseModulesDep(strings.NewReader(tc.dep))
			var got []string
			if err == nil {
				got, err = LoadOrder(deps)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("load order (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCmdline(t *testing.T) {
	cases := map[string]struct {
		in      string
		want    Cmdline
		wantErr string
	}{
		"url only": {in: "console=ttyS0 metal.url=http://192.0.2.1:8080/ panic=-1",
			want: Cmdline{URL: "http://192.0.2.1:8080"}},
		"bootif and token": {in: "initrd=agent.cpio metal.url=http://192.0.2.1:8080 BOOTIF=01-52-54-00-aa-bb-cc metal.token=abc",
			want: Cmdline{URL: "http://192.0.2.1:8080", BootIF: mustMAC("52:54:00:aa:bb:cc"), Token: "abc"}},
		"static": {in: "metal.url=http://203.0.113.1:8080 metal.ip=198.51.100.50/24 metal.gw=198.51.100.1",
			want: Cmdline{URL: "http://203.0.113.1:8080", Addr: netip.MustParsePrefix("198.51.100.50/24"), Gateway: netip.MustParseAddr("198.51.100.1")}},
		"gw outside":     {in: "metal.url=http://x metal.ip=198.51.100.50/24 metal.gw=192.0.2.1", wantErr: "not in"},
		"gw without ip":  {in: "metal.url=http://x metal.gw=192.0.2.1", wantErr: "without metal.ip"},
		"ip without len": {in: "metal.url=http://x metal.ip=198.51.100.50", wantErr: "ADDR/PREFIX"},
		"no url":         {in: "console=ttyS0", wantErr: "no metal.url"},
		"bad url":        {in: "metal.url=ftp://x", wantErr: "want http://HOST:PORT"},
		"bad bootif":     {in: "metal.url=http://x BOOTIF=01-zz", wantErr: "BOOTIF"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := ParseCmdline(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
