// Package storeleases keeps the DHCP server's leases in the inventory store
// (dhcp.SharedLeaseStore), so that several metal servers sharing one etcd
// allocate from one table.
package storeleases

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe/dhcp"
)

// InventoryLeases keeps the server's leases in metal's inventory store and
// allocates through inventory.Store.AllocateLease, which is transactional
// (a CAS on the address and the MAC): with an etcd store, every metal
// server of a site may answer DHCP and none hands out an address another
// gave. Declined addresses are held in the store by a placeholder MAC made
// from the address (see declineMAC), so every server skips them.
type InventoryLeases struct {
	store inventory.Store
}

// NewInventoryLeases returns a lease store over s for NewServer.
func NewInventoryLeases(s inventory.Store) *InventoryLeases {
	return &InventoryLeases{store: s}
}

var _ dhcp.SharedLeaseStore = (*InventoryLeases)(nil)

// declinePrefix starts the placeholder MAC holding a declined address: a
// locally administered unicast prefix (02:...), followed by the whole
// address, so every declined address has its own holder. (The store keeps
// one lease per MAC: a holder shared by two addresses, as 10.16.0.5 and
// 172.16.0.5 of two networks, would move from one to the other.)
var declinePrefix = [2]byte{0x02, 0xdc}

func declineMAC(ip netip.Addr) string {
	a := ip.As4()
	return net.HardwareAddr{declinePrefix[0], declinePrefix[1], a[0], a[1], a[2], a[3]}.String()
}

func isDeclineHolder(l inventory.Lease) bool {
	return l.IP.Is4() && l.MAC == declineMAC(l.IP)
}

// Load returns the store's leases; placeholders of declined addresses come
// back as declines.
func (s *InventoryLeases) Load(ctx context.Context) ([]dhcp.Lease, error) {
	ls, _, err := s.store.Leases(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", dhcp.ErrLeaseStore, err)
	}
	out := make([]dhcp.Lease, 0, len(ls))
	for _, l := range ls {
		mac, err := net.ParseMAC(l.MAC)
		if err != nil {
			continue
		}
		out = append(out, dhcp.Lease{MAC: mac, IP: l.IP, Hostname: l.Hostname, Expiry: l.Expiry, Declined: isDeclineHolder(l)})
	}
	return out, nil
}

// Save writes nothing: Allocate, Release and Decline wrote every change
// durably (a bbolt fsync, an etcd quorum) before they returned.
func (s *InventoryLeases) Save(context.Context, []dhcp.Lease) error { return nil }

func (s *InventoryLeases) Allocate(ctx context.Context, a dhcp.Allocation) (netip.Addr, time.Time, error) {
	mac := a.MAC.String()
	// An offer (short TTL) to a MAC that holds a longer lease in the range,
	// from any server, must not cut that lease short: answer with it as is.
	if l, err := s.store.Lease(ctx, mac); err == nil && inRange(l.IP, a.Start, a.End) && !slices.Contains(a.Exclude, l.IP) &&
		!l.Expired(time.Now()) && !l.Expiry.Before(time.Now().Add(a.TTL)) {
		return l.IP, l.Expiry, nil
	} else if err != nil && !errors.Is(err, inventory.ErrNotFound) {
		return netip.Addr{}, time.Time{}, fmt.Errorf("%w: %w", dhcp.ErrLeaseStore, err)
	}
	l, err := s.store.AllocateLease(ctx, inventory.AllocateRequest{
		MAC: mac, Hostname: a.Hostname, Start: a.Start, End: a.End, Exclude: a.Exclude, Prefer: a.Prefer, TTL: a.TTL,
	})
	switch {
	case errors.Is(err, inventory.ErrPoolExhausted), errors.Is(err, inventory.ErrConflict):
		return netip.Addr{}, time.Time{}, fmt.Errorf("%w: %w", dhcp.ErrPoolExhausted, err)
	case err != nil:
		return netip.Addr{}, time.Time{}, fmt.Errorf("%w: %w", dhcp.ErrLeaseStore, err)
	}
	return l.IP, l.Expiry, nil
}

func inRange(ip, start, end netip.Addr) bool {
	return ip.IsValid() && !ip.Less(start) && !end.Less(ip)
}

func (s *InventoryLeases) Release(ctx context.Context, mac net.HardwareAddr, ip netip.Addr) error {
	_, err := s.release(ctx, mac, ip)
	return err
}

// release frees mac's lease if it is of ip, and says whether it was.
func (s *InventoryLeases) release(ctx context.Context, mac net.HardwareAddr, ip netip.Addr) (bool, error) {
	l, err := s.store.Lease(ctx, mac.String())
	if errors.Is(err, inventory.ErrNotFound) || (err == nil && l.IP != ip) {
		return false, nil
	}
	if err == nil {
		err = s.store.ReleaseLease(ctx, mac.String())
	}
	if err != nil {
		return false, fmt.Errorf("%w: release %v of %v: %w", dhcp.ErrLeaseStore, ip, mac, err)
	}
	return true, nil
}

// Decline takes ip out of every server's pool only when mac holds it, as
// the table without a shared store does: a client cannot decline an
// address it was never given (another network's least of all).
func (s *InventoryLeases) Decline(ctx context.Context, mac net.HardwareAddr, ip netip.Addr, until time.Time) error {
	held, err := s.release(ctx, mac, ip)
	if err != nil || !held {
		return err
	}
	ttl := time.Until(until)
	if ttl <= 0 {
		return nil
	}
	_, err = s.store.AllocateLease(ctx, inventory.AllocateRequest{
		MAC: declineMAC(ip), Hostname: "declined by " + mac.String(), Start: ip, End: ip, TTL: ttl,
	})
	if errors.Is(err, inventory.ErrPoolExhausted) {
		return nil // another MAC took it meanwhile: it is not free either way
	}
	if err != nil {
		return fmt.Errorf("%w: decline %v: %w", dhcp.ErrLeaseStore, ip, err)
	}
	return nil
}
