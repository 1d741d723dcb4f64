package dhcp

import (
	"context"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

func benchHandler(b *testing.B, store LeaseStore) *Handler {
	cfg := unitConfig()
	h, err := NewHandler(cfg, unitPolicy(), store, discardLog())
	if err != nil {
		b.Fatal(err)
	}
	return h
}

// benchMACs are as many unknown MACs as the pool has addresses, so that
// every one keeps getting its own address.
func benchMACs() []net.HardwareAddr {
	macs := make([]net.HardwareAddr, 100)
	for i := range macs {
		macs[i] = net.HardwareAddr{2, 0xbe, 0, 0, 0, byte(i)}
	}
	return macs
}

// BenchmarkHandleDiscover is the packet path of a DISCOVER from a BIOS PXE
// ROM: parse, pool offer, boot file, serialize.
func BenchmarkHandleDiscover(b *testing.B) {
	h := benchHandler(b, nil)
	var pkts [][]byte
	for _, m := range benchMACs() {
		pkts = append(pkts, discover(m, pxeClient(iana.INTEL_X86PC)).ToBytes())
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req, err := dhcpv4.FromBytes(pkts[i%len(pkts)])
		if err != nil {
			b.Fatal(err)
		}
		resp, err := h.Handle(ctx, req, From{})
		if err != nil || resp == nil {
			b.Fatal(resp, err)
		}
		_ = resp.ToBytes()
	}
}

// BenchmarkHandleReservedIPXE: a declared machine's iPXE asking for its
// script URL.
func BenchmarkHandleReservedIPXE(b *testing.B) {
	h := benchHandler(b, nil)
	pkt := discover(macKnown, pxeClient(iana.EFI_X86_64), ipxeUserClass, ipxeEncap).ToBytes()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		req, _ := dhcpv4.FromBytes(pkt)
		resp, err := h.Handle(ctx, req, From{})
		if err != nil || resp == nil {
			b.Fatal(resp, err)
		}
		_ = resp.ToBytes()
	}
}

// BenchmarkHandleRequest is the REQUEST half of DORA (the lease is
// committed), leases in memory.
func BenchmarkHandleRequest(b *testing.B) {
	benchRequest(b, nil)
}

// BenchmarkHandleRequestDurable is the same with the file store, its clock
// moving on so that every REQUEST renews a lease past cacheThreshold:
// every ACK waits for its lease to be on disk. Run in parallel,
// concurrent ACKs share a write (the server runs several workers for this
// reason).
func BenchmarkHandleRequestDurable(b *testing.B) {
	benchRequest(b, NewFileStore(filepath.Join(b.TempDir(), "leases.json")))
}

func benchRequest(b *testing.B, store LeaseStore) {
	h := benchHandler(b, store)
	if store != nil {
		var ticks atomic.Int64
		lease := unitConfig().Subnets[0].LeaseTime
		h.now = func() time.Time { return t0.Add(time.Duration(ticks.Add(1)) * lease / 3) }
	}
	ctx := context.Background()
	var pkts [][]byte
	for _, m := range benchMACs() {
		offer, err := h.Handle(ctx, discover(m), From{})
		if err != nil {
			b.Fatal(err)
		}
		req, _ := dhcpv4.NewRequestFromOffer(offer)
		pkts = append(pkts, req.ToBytes())
	}
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(64) // many waiting workers, as the server has
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := dhcpv4.FromBytes(pkts[int(n.Add(1))%len(pkts)])
			resp, err := h.Handle(ctx, req, From{})
			if err != nil || resp == nil || resp.MessageType() != dhcpv4.MessageTypeAck {
				b.Error(resp, err)
				return
			}
			_ = resp.ToBytes()
		}
	})
}
