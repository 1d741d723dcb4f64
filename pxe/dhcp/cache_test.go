package dhcp

import (
	"context"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// countingStore is a FileStore that counts its Saves.
type countingStore struct {
	*FileStore
	saves atomic.Int64
}

func (c *countingStore) Save(ctx context.Context, leases []Lease) error {
	c.saves.Add(1)
	return c.FileStore.Save(ctx, leases)
}

// TestLeaseCache: a machine asking again for the lease it holds (iPXE
// after the PXE ROM, the installer after iPXE) while less than
// cacheThreshold of it ran gets it as it stands: no Save, the time it has
// left in the ACK, the same expiry after a restart. Later, or for an
// address it does not hold, the lease is written anew.
func TestLeaseCache(t *testing.T) {
	const lease = 10 * time.Minute // labConfig's
	for name, tc := range map[string]struct {
		mac   net.HardwareAddr
		after time.Duration // from the first ACK to the second DORA
		mods  []dhcpv4.Modifier
		// want: the second ACK's lease time, and whether it saved.
		wantLease time.Duration
		wantSave  bool
	}{
		"declared machine, iPXE seconds after its PXE ROM": {
			mac: macKnown, after: 3 * time.Second, mods: []dhcpv4.Modifier{pxeClient(iana.INTEL_X86PC), ipxeUserClass, ipxeEncap},
			wantLease: lease - 3*time.Second,
		},
		"pool address, a minute later": {
			mac: macPoolOK, after: time.Minute, wantLease: lease - time.Minute,
		},
		"at the threshold": {
			mac: macPoolOK, after: lease / 4, wantLease: lease - lease/4,
		},
		"past the threshold": {
			mac: macKnown, after: lease/4 + time.Second, wantLease: lease, wantSave: true,
		},
		"after the lease ran out": {
			mac: macPoolOK, after: lease + time.Second, wantLease: lease, wantSave: true,
		},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "leases.json")
			store := &countingStore{FileStore: NewFileStore(path)}
			h, now := newUnitHandler(t, unitConfig(), unitPolicy(), store)
			ip := dora(t, h, tc.mac, tc.mods...)
			first := store.saves.Load()
			*now = now.Add(tc.after)
			ack := doraAck(t, h, tc.mac, tc.mods...)
			if got, _ := addr4(ack.YourIPAddr); got != ip {
				t.Fatalf("second DORA got %v, want %v", got, ip)
			}
			got := struct {
				Lease, T1, T2 time.Duration
				Saved         bool
			}{ack.IPAddressLeaseTime(0), ack.IPAddressRenewalTime(0), ack.IPAddressRebindingTime(0), store.saves.Load() > first}
			want := got
			// (Options carry whole seconds.)
			want.Lease, want.T1, want.T2, want.Saved = tc.wantLease, (tc.wantLease / 2).Truncate(time.Second), (tc.wantLease * 7 / 8).Truncate(time.Second), tc.wantSave
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("second ACK (-want +got):\n%s", diff)
			}
			// What a restarted server knows is what the client was told.
			h2, now2 := newUnitHandler(t, unitConfig(), unitPolicy(), NewFileStore(path))
			*now2 = *now
			stored, _ := h2.leases.leasedIP(keyOf6(tc.mac), now.Add(tc.wantLease-time.Second))
			gone, _ := h2.leases.leasedIP(keyOf6(tc.mac), now.Add(tc.wantLease+time.Second))
			if stored != ip || gone.IsValid() {
				t.Errorf("after a restart the lease of %v runs to %v? held %v a second before, %v a second after", ip, now.Add(tc.wantLease), stored, gone)
			}
		})
	}
}

// TestLeaseCacheWaitsForSave: a REQUEST repeated while the first one's
// lease is not yet saved (the client's retransmission) finds that lease
// running, and its ACK still waits for the Save.
func TestLeaseCacheWaitsForSave(t *testing.T) {
	ctx := context.Background()
	store := &gatedStore{FileStore: NewFileStore(filepath.Join(t.TempDir(), "leases.json")), gate: make(chan struct{}), saved: make(chan struct{})}
	h, _ := newUnitHandler(t, unitConfig(), unitPolicy(), store)
	offer, err := h.Handle(ctx, discover(macPoolOK), From{})
	if err != nil || offer == nil {
		t.Fatalf("discover: %v %v", offer, err)
	}
	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		t.Fatal(err)
	}
	acks := make(chan *dhcpv4.DHCPv4, 2)
	for range 2 {
		go func() {
			ack, err := h.Handle(ctx, req, From{})
			if err != nil {
				t.Error(err)
			}
			acks <- ack
		}()
		select {
		case ack := <-acks:
			t.Fatalf("an ACK before its lease was saved: %v", ack)
		case <-time.After(200 * time.Millisecond):
		}
	}
	close(store.gate)
	for range 2 {
		if ack := <-acks; ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("after the save: %v, want an ACK", ack)
		}
	}
}

func keyOf6(mac net.HardwareAddr) macKey {
	k, _ := keyOf(mac)
	return k
}
