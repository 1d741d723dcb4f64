package dhcp

import (
	"sync"
	"time"
)

// rateLimiter is a token bucket per MAC, in a table of bounded size.
type rateLimiter struct {
	burst float64
	every time.Duration
	max   int

	// holds reports whether a MAC holds an address (offered or leased);
	// eviction spares those it can. Nil: none does. Called with mu held.
	holds func(macKey) bool

	mu      sync.Mutex
	buckets map[macKey]bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(c RateLimit) *rateLimiter {
	if c.Disabled {
		return nil
	}
	return &rateLimiter{
		burst:   float64(c.Burst),
		every:   c.Every,
		max:     c.MaxTracked,
		buckets: make(map[macKey]bucket),
	}
}

// allow takes one token from mac's bucket, if it has one. A nil limiter
// allows everything.
func (r *rateLimiter) allow(k macKey, now time.Time) bool {
	if r == nil {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.buckets[k]
	if !ok {
		if len(r.buckets) >= r.max {
			r.evict(now)
		}
		b = bucket{tokens: r.burst, last: now}
	} else {
		b.tokens = r.refill(b, now)
		b.last = now
	}
	allowed := b.tokens >= 1
	if allowed {
		b.tokens--
	}
	r.buckets[k] = b
	return allowed
}

func (r *rateLimiter) refill(b bucket, now time.Time) float64 {
	t := b.tokens + float64(now.Sub(b.last))/float64(r.every)
	if t > r.burst {
		return r.burst
	}
	return t
}

// evict forgets one MAC among a few looked at: an idle one (its bucket
// full again, so forgetting it changes nothing), else one that holds no
// address, else the first looked at. Map iteration starts at a random
// place, so under a flood of fresh MACs this is random eviction, and a MAC
// that is forgotten only gets a fresh burst: the limit can be diluted by a
// flood of many MACs, never turned against a well-behaved one. The MACs
// that hold an address are spared because they are the ones a server
// answers once its pool is spent: a fresh burst for each of them is a
// burst of OFFERs on the link.
func (r *rateLimiter) evict(now time.Time) {
	const look = 16
	var first, free macKey
	n, haveFree := 0, false
	for k, b := range r.buckets {
		if n == 0 {
			first = k
		}
		if r.refill(b, now) >= r.burst {
			delete(r.buckets, k)
			return
		}
		if !haveFree && (r.holds == nil || !r.holds(k)) {
			free, haveFree = k, true
		}
		n++
		if n == look {
			break
		}
	}
	if haveFree {
		first = free
	}
	delete(r.buckets, first)
}

func (r *rateLimiter) size() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.buckets)
}

// poolBudget is the token bucket of new pool bindings for unknown MACs,
// one for the whole server (see RateLimit.PoolBurst).
type poolBudget struct {
	burst float64
	every time.Duration

	mu sync.Mutex
	b  bucket
}

func newPoolBudget(c RateLimit) *poolBudget {
	if c.Disabled {
		return nil
	}
	return &poolBudget{burst: float64(c.PoolBurst), every: c.PoolEvery, b: bucket{tokens: float64(c.PoolBurst)}}
}

// take takes a token, if there is one. A nil budget allows everything.
func (p *poolBudget) take(now time.Time) bool {
	if p == nil {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.b.last.IsZero() {
		p.b.tokens = min(p.burst, p.b.tokens+float64(now.Sub(p.b.last))/float64(p.every))
	}
	p.b.last = now
	if p.b.tokens < 1 {
		return false
	}
	p.b.tokens--
	return true
}
