package dhcp

import (
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
	steer, err := bpf.NewVM(steerProgram)
	if err != nil {
		t.Fatal(err)
	}
	bulk, err := bpf.NewVM(bulkFilter)
	if err != nil {
		t.Fatal(err)
	}
	first, err := bpf.NewVM(firstFilter)
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
