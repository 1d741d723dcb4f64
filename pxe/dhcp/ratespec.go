package dhcp

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseRateLimit reads a RateLimit as an operator writes it: the per-MAC
// limit "off" (no limit, no pool budget either) or BURST/INTERVAL (a
// burst, then one packet per interval), and the pool budget BURST/INTERVAL.
func ParseRateLimit(perMAC, pool string) (RateLimit, error) {
	if perMAC == "off" {
		return RateLimit{Disabled: true}, nil
	}
	burst, every, err := parseBurst(perMAC, "10/500ms")
	if err != nil {
		return RateLimit{}, fmt.Errorf("rate limit %w", err)
	}
	poolBurst, poolEvery, err := parseBurst(pool, "64/1s")
	if err != nil {
		return RateLimit{}, fmt.Errorf("pool budget %w", err)
	}
	return RateLimit{Burst: burst, Every: every, PoolBurst: poolBurst, PoolEvery: poolEvery}, nil
}

// parseBurst reads BURST/INTERVAL.
func parseBurst(v, example string) (int, time.Duration, error) {
	b, e, ok := strings.Cut(v, "/")
	burst, err := strconv.Atoi(b)
	if !ok || err != nil || burst < 1 {
		return 0, 0, fmt.Errorf("%q: want BURST/INTERVAL (like %s)", v, example)
	}
	every, err := time.ParseDuration(e)
	if err != nil || every <= 0 {
		return 0, 0, fmt.Errorf("%q: the interval must be a positive duration (like 500ms)", v)
	}
	return burst, every, nil
}
