package inventory

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"net/netip"
	"time"
)

func ipKey(ip netip.Addr) string {
	b := ip.Unmap().As4()
	return fmt.Sprintf("%s%08x", pfxIP, binary.BigEndian.Uint32(b[:]))
}

func ipv4(what string, ip netip.Addr) (uint32, error) {
	ip = ip.Unmap()
	if !ip.Is4() {
		return 0, fmt.Errorf("%s %v is not an IPv4 address: %w", what, ip, ErrInvalid)
	}
	b := ip.As4()
	return binary.BigEndian.Uint32(b[:]), nil
}

func u32addr(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func decodeLease(kv KeyValue) (Lease, error) {
	l, err := decode[Lease](kv)
	l.Revision = kv.ModRev
	return l, err
}

func (s *store) Lease(ctx context.Context, mac string) (Lease, error) {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return Lease{}, err
	}
	kv, ok, err := s.kv.Get(ctx, pfxLease+mac)
	if err != nil {
		return Lease{}, fmt.Errorf("get lease of %s: %w", mac, err)
	}
	if !ok {
		return Lease{}, fmt.Errorf("lease of %s: %w", mac, ErrNotFound)
	}
	return decodeLease(kv)
}

func (s *store) LeaseByIP(ctx context.Context, ip netip.Addr) (Lease, error) {
	if _, err := ipv4("lease address", ip); err != nil {
		return Lease{}, err
	}
	kv, ok, err := s.kv.Get(ctx, ipKey(ip))
	if err != nil {
		return Lease{}, fmt.Errorf("get lease of %v: %w", ip, err)
	}
	if !ok {
		return Lease{}, fmt.Errorf("lease of %v: %w", ip, ErrNotFound)
	}
	return decodeLease(kv)
}

func (s *store) Leases(ctx context.Context) ([]Lease, int64, error) {
	kvs, rev, err := s.kv.List(ctx, KeyRange{Prefix: pfxIP})
	if err != nil {
		return nil, 0, fmt.Errorf("list leases: %w", err)
	}
	out := make([]Lease, 0, len(kvs))
	for _, kv := range kvs {
		l, err := decodeLease(kv)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, l)
	}
	return out, rev, nil
}

func (s *store) ReleaseLease(ctx context.Context, mac string) error {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return err
	}
	for attempt := 0; attempt < 32; attempt++ {
		kv, ok, err := s.kv.Get(ctx, pfxLease+mac)
		if err != nil || !ok {
			return err
		}
		l, err := decodeLease(kv)
		if err != nil {
			return err
		}
		_, ok, err = s.kv.Txn(ctx, Txn{If: []Cond{{Key: kv.Key, ModRev: kv.ModRev}}, Then: []Op{Del(kv.Key), Del(ipKey(l.IP))}})
		if err != nil {
			return fmt.Errorf("release lease of %s: %w", mac, err)
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("release lease of %s: %w", mac, ErrConflict)
}

// AllocateLease works optimistically: read what the range holds, choose an
// address, and write it with conditions on every key the choice depended on
// (the MAC's own lease, the address, the expired holder's lease). If another
// server wrote any of them first, nothing is written and we choose again.
// Each MAC starts its search at an offset derived from the MAC, so servers
// answering different clients at once rarely race for the same address.
func (s *store) AllocateLease(ctx context.Context, req AllocateRequest) (Lease, error) {
	mac, err := NormalizeMAC(req.MAC)
	if err != nil {
		return Lease{}, err
	}
	lo, err := ipv4("range start", req.Start)
	if err != nil {
		return Lease{}, err
	}
	hi, err := ipv4("range end", req.End)
	if err != nil {
		return Lease{}, err
	}
	if hi < lo {
		return Lease{}, fmt.Errorf("range %v-%v is empty: %w", req.Start, req.End, ErrInvalid)
	}
	if req.TTL <= 0 {
		return Lease{}, fmt.Errorf("lease ttl %v: %w", req.TTL, ErrInvalid)
	}
	excluded := map[uint32]bool{}
	for _, a := range req.Exclude {
		if v, err := ipv4("excluded address", a); err == nil {
			excluded[v] = true
		}
	}
	usable := func(v uint32) bool { return v >= lo && v <= hi && !excluded[v] }

	for attempt := 0; attempt < 200; attempt++ {
		if err := ctx.Err(); err != nil {
			return Lease{}, err
		}
		now := s.opts.Now()
		lease := Lease{MAC: mac, Hostname: req.Hostname, Expiry: now.Add(req.TTL).UTC().Truncate(time.Millisecond)}
		own, hasOwn, err := s.kv.Get(ctx, pfxLease+mac)
		if err != nil {
			return Lease{}, fmt.Errorf("allocate for %s: %w", mac, err)
		}
		var ownLease Lease
		if hasOwn {
			if ownLease, err = decodeLease(own); err != nil {
				return Lease{}, err
			}
			if v, _ := ipv4("", ownLease.IP); usable(v) {
				// Renew in place. A preferred different address is ignored:
				// a client keeps its address while it is in the range.
				lease.IP = ownLease.IP
				l, ok, err := s.writeLease(ctx, lease, own, hasOwn, ownLease, KeyValue{}, false)
				if err != nil || ok {
					return l, err
				}
				continue
			}
		}

		held, _, err := s.kv.List(ctx, KeyRange{Prefix: pfxIP, From: ipKey(u32addr(lo)), To: ipKey(u32addr(hi)) + "\x00"})
		if err != nil {
			return Lease{}, fmt.Errorf("allocate for %s: %w", mac, err)
		}
		byIP := make(map[uint32]KeyValue, len(held))
		for _, kv := range held {
			var v uint32
			if _, err := fmt.Sscanf(kv.Key[len(pfxIP):], "%08x", &v); err == nil {
				byIP[v] = kv
			}
		}
		// free reports whether v can be taken, and the holder to evict.
		free := func(v uint32) (KeyValue, bool) {
			if !usable(v) {
				return KeyValue{}, false
			}
			kv, taken := byIP[v]
			if !taken {
				return KeyValue{}, true
			}
			l, err := decodeLease(kv)
			if err != nil || !l.Expired(now) {
				return KeyValue{}, false
			}
			return kv, true
		}
		cand, evict, found := uint32(0), KeyValue{}, false
		if req.Prefer.IsValid() {
			if v, err := ipv4("", req.Prefer); err == nil {
				evict, found = free(v)
				cand = v
			}
		}
		if !found {
			size := uint64(hi) - uint64(lo) + 1
			h := fnv.New64a()
			h.Write([]byte(mac))
			start := h.Sum64() % size
			// Unheld addresses first, expired ones only when none is left, so
			// a client returning soon after its lease ran out still finds its
			// old address.
			for pass := 0; pass < 2 && !found; pass++ {
				for i := uint64(0); i < size; i++ {
					v := lo + uint32((start+i)%size)
					kv, ok := free(v)
					if ok && (pass == 1 || kv.Key == "") {
						cand, evict, found = v, kv, true
						break
					}
				}
			}
		}
		if !found {
			return Lease{}, fmt.Errorf("allocate for %s in %v-%v: %w", mac, req.Start, req.End, ErrPoolExhausted)
		}
		lease.IP = u32addr(cand)
		l, ok, err := s.writeLease(ctx, lease, own, hasOwn, ownLease, evict, evict.Key != "")
		if err != nil || ok {
			return l, err
		}
	}
	return Lease{}, fmt.Errorf("allocate for %s: gave up after repeated races: %w", mac, ErrConflict)
}

// writeLease writes lease for its MAC, on the conditions that the MAC's own
// lease (own) and the target address (evict, or absent) are unchanged.
func (s *store) writeLease(ctx context.Context, lease Lease, own KeyValue, hasOwn bool, ownLease Lease, evict KeyValue, evicting bool) (Lease, bool, error) {
	key := pfxLease + lease.MAC
	conds := []Cond{{Key: key, ModRev: own.ModRev}}
	var ops []Op
	if hasOwn && ownLease.IP != lease.IP {
		ops = append(ops, Del(ipKey(ownLease.IP)))
	}
	if hasOwn && ownLease.IP == lease.IP {
		conds = append(conds, Cond{Key: ipKey(lease.IP), ModRev: own.ModRev})
	} else {
		conds = append(conds, Cond{Key: ipKey(lease.IP), ModRev: evict.ModRev})
	}
	if evicting {
		old, err := decodeLease(evict)
		if err != nil {
			return Lease{}, false, err
		}
		// The evicted holder's lease record was written with its address
		// record, in the same Txn, so it has the same revision.
		conds = append(conds, Cond{Key: pfxLease + old.MAC, ModRev: evict.ModRev})
		ops = append(ops, Del(pfxLease+old.MAC))
	}
	body := mustJSON(lease)
	ops = append(ops, Put(key, body), Put(ipKey(lease.IP), body))
	rev, ok, err := s.kv.Txn(ctx, Txn{If: conds, Then: ops})
	if err != nil {
		return Lease{}, false, fmt.Errorf("write lease %v for %s: %w", lease.IP, lease.MAC, err)
	}
	lease.Revision = rev
	return lease, ok, nil
}
