package dhcp

import (
	"bytes"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/net/bpf"

	"github.com/metal-dev/metal/pxe/pxetest"
)

// TestSteerProgram runs the steering program and the sockets' filters in
// x/net's BPF VM on what the kernel would give them.
func TestSteerProgram(t *testing.T) {
	steer, err := bpf.NewVM(steerProgram(nil))
	if err != nil {
		t.Fatal(err)
	}
	bulk, err := bpf.NewVM(bulkFilter(nil))
	if err != nil {
		t.Fatal(err)
	}
	first, err := bpf.NewVM(firstFilter(nil))
	if err != nil {
		t.Fatal(err)
	}
	udp := make([]byte, udpHeader) // the filters see the UDP header first
	mac := pxetest.MAC(1)
	offerLike := discover(mac)
	offerLike.OpCode = dhcpv4.OpcodeBootReply
	tests := map[string]struct {
		pkt  []byte
		want int
	}{
		"DISCOVER":                      {discover(mac).ToBytes(), 0},
		"REQUEST":                       {request(mac).ToBytes(), 1},
		"RELEASE":                       {msg(dhcpv4.MessageTypeRelease, mac).ToBytes(), 1},
		"DECLINE":                       {msg(dhcpv4.MessageTypeDecline, mac).ToBytes(), 1},
		"INFORM":                        {msg(dhcpv4.MessageTypeInform, mac).ToBytes(), 1},
		"a reply":                       {offerLike.ToBytes(), 0},
		"too short for DHCP: no socket": {[]byte{1, 1, 6, 0}, -1},
		"no cookie":                     {append(request(mac).ToBytes()[:236], 0, 0, 0, 0, 53, 1, 3, 255), 0},
		"53 not first":                  {append(request(mac).ToBytes()[:240], 12, 1, 'x', 53, 1, 3, 255), 0},
	}
	for name, tc := range tests {
		got, err := steer.Run(tc.pkt)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if tc.want >= 0 && got != tc.want {
			t.Errorf("%s: steered to socket %d, want %d", name, got, tc.want)
		}
		withUDP := append(udp[:udpHeader:udpHeader], tc.pkt...)
		kb, err := bulk.Run(withUDP)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		kf, err := first.Run(withUDP)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if tc.want < 0 {
			if kb > 0 || kf > 0 {
				t.Errorf("%s: bulk filter keeps %d bytes, first %d, want none", name, kb, kf)
			}
			continue
		}
		if (kb > 0) != (tc.want == 0) || (kf > 0) != (tc.want == 1) {
			t.Errorf("%s: bulk filter keeps %d bytes, first %d, want it in socket %d only", name, kb, kf, tc.want)
		}
	}
}

// TestSteerDeclared: a DISCOVER from a declared MAC goes to the first
// socket, whatever the number of MACs and however they share their
// first bytes; one from any other MAC to the bulk one.
func TestSteerDeclared(t *testing.T) {
	rack := func(n int, mac func(i int) net.HardwareAddr) []net.HardwareAddr {
		var macs []net.HardwareAddr
		for i := range n {
			macs = append(macs, mac(i))
		}
		return macs
	}
	tests := map[string][]net.HardwareAddr{
		"none": nil,
		"one":  {pxetest.MAC(7)},
		"a rack sharing four bytes, in several chunks": rack(3*macChunk+17, func(i int) net.HardwareAddr {
			return net.HardwareAddr{0x52, 0x54, 0, 0x01, byte(i >> 8), byte(i)}
		}),
		"scattered": rack(100, func(i int) net.HardwareAddr {
			return net.HardwareAddr{0x52, byte(i), 0, byte(i * 7), 0, 1}
		}),
	}
	for name, declared := range tests {
		declared := sortMACs(declared)
		udp := make([]byte, udpHeader)
		vm := func(program []bpf.Instruction) *bpf.VM {
			if len(program) > maxSteering {
				t.Fatalf("%s: %d instructions", name, len(program))
			}
			v, err := bpf.NewVM(program)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return v
		}
		steer, bulk, first := vm(steerProgram(declared)), vm(bulkFilter(declared)), vm(firstFilter(declared))
		check := func(mac net.HardwareAddr, want int) {
			pkt := discover(mac).ToBytes()
			got, err := steer.Run(pkt)
			if err != nil {
				t.Fatal(err)
			}
			kb, _ := bulk.Run(append(udp, pkt...))
			kf, _ := first.Run(append(udp, pkt...))
			if got != want || (kb > 0) != (want == 0) || (kf > 0) != (want == 1) {
				t.Errorf("%s: DISCOVER from %v steered to %d, bulk keeps %d, first keeps %d; want socket %d", name, mac, got, kb, kf, want)
			}
		}
		for _, mac := range declared {
			check(mac, 1)
			other := slices.Clone(mac)
			other[5] ^= 0x80 // a neighbour not declared
			if _, found := slices.BinarySearchFunc(declared, other, func(a, b net.HardwareAddr) int { return bytes.Compare(a, b) }); !found {
				check(other, 0)
			}
		}
		check(pxetest.MAC(0x999), 0)
	}
	// Too many scattered MACs: the programs compare none.
	var many []net.HardwareAddr
	for i := range 1000 {
		many = append(many, net.HardwareAddr{2, byte(i >> 8), byte(i), 0, 0, 1})
	}
	if n := len(steerProgram(sortMACs(many))); n <= maxSteering {
		t.Errorf("1000 scattered MACs: %d instructions, expected beyond %d", n, maxSteering)
	}
}

// TestLogBudget: ten records a second, then one summary of those held
// back, at the next second's first.
func TestLogBudget(t *testing.T) {
	var b logBudget
	t0 := time.Unix(1000, 0)
	var summaries []int
	summary := func(n int) { summaries = append(summaries, n) }
	allowed := 0
	for i := range 15 {
		if b.allow(t0.Add(time.Duration(i)*time.Millisecond), summary) {
			allowed++
		}
	}
	if allowed != logPerSecond || len(summaries) != 0 {
		t.Fatalf("in the first second %d allowed, summaries %v; want %d and none", allowed, summaries, logPerSecond)
	}
	if !b.allow(t0.Add(1100*time.Millisecond), summary) {
		t.Error("the next second's first record held back")
	}
	if diff := cmp.Diff([]int{5}, summaries); diff != "" {
		t.Errorf("summaries (-want +got):\n%s", diff)
	}
}
