// Package scan finds BMCs on a network: it asks each address for a Redfish
// service root (GET /redfish/v1/) and sends it an RMCP presence ping (the
// ASF ping every IPMI-over-LAN BMC answers on UDP 623). `metal init` uses
// it to list the machines it can write into a first site file.
package scan

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Found is one BMC that answered.
type Found struct {
	Addr netip.Addr
	// Protocol is "redfish" or "ipmi", as a site file's bmc block says it.
	Protocol string
	// Address is what a site file's bmc block takes: the Redfish base URL
	// ("https://10.0.1.5") or the IPMI host ("10.0.1.5").
	Address string
	// Product is what the BMC says it is, when it says (Redfish's Vendor
	// and Product), else "".
	Product string
}

// Options say how to scan.
type Options struct {
	// Redfish are the base URLs tried per address, with %s for the
	// address; default https://%s and http://%s. Empty after defaults
	// means: do not look for Redfish ([]string{} with NoRedfish).
	Redfish   []string
	NoRedfish bool
	// IPMIPort is the UDP port of the RMCP ping; default 623; NoIPMI
	// skips it.
	IPMIPort int
	NoIPMI   bool
	// Timeout bounds each probe (default 2 s); Concurrency is how many
	// addresses are probed at once (default 64).
	Timeout     time.Duration
	Concurrency int
}

// MaxAddresses is the most addresses one scan probes (a /20): larger
// networks are not scanned by accident.
const MaxAddresses = 4096

// Hosts lists the host addresses of prefix (without the network and
// broadcast addresses of an IPv4 subnet of /30 or larger).
func Hosts(prefix netip.Prefix) ([]netip.Addr, error) {
	prefix = prefix.Masked()
	if !prefix.Addr().Is4() {
		return nil, fmt.Errorf("scan %s: only IPv4 networks are scanned", prefix)
	}
	size := 1 << (32 - prefix.Bits())
	if size > MaxAddresses {
		return nil, fmt.Errorf("scan %s: %d addresses, more than the %d one scan probes; give a smaller network", prefix, size, MaxAddresses)
	}
	var out []netip.Addr
	a := prefix.Addr()
	for i := 0; i < size; i++ {
		if size >= 4 && (i == 0 || i == size-1) {
			a = a.Next()
			continue
		}
		out = append(out, a)
		a = a.Next()
	}
	return out, nil
}

// Scan probes every address and returns the BMCs that answered, by
// address (Redfish before IPMI for one address that speaks both). It
// returns early with what it found when ctx ends.
func Scan(ctx context.Context, addrs []netip.Addr, opts Options) ([]Found, error) {
	if len(opts.Redfish) == 0 && !opts.NoRedfish {
		opts.Redfish = []string{"https://%s", "http://%s"}
	}
	if opts.NoRedfish {
		opts.Redfish = nil
	}
	if opts.IPMIPort == 0 {
		opts.IPMIPort = 623
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 64
	}
	client := &http.Client{
		Timeout: opts.Timeout,
		Transport: &http.Transport{
			// BMCs ship self-signed certificates; finding one is not
			// trusting it (the site file's bmc block decides that).
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // discovery only
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer client.CloseIdleConnections()

	var (
		mu    sync.Mutex
		found []Found
		wg    sync.WaitGroup
		sem   = make(chan struct{}, opts.Concurrency)
	)
	for _, a := range addrs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			var here []Found
			for _, tmpl := range opts.Redfish {
				base := fmt.Sprintf(tmpl, hostForURL(a))
				if product, ok := probeRedfish(ctx, client, base); ok {
					here = append(here, Found{Addr: a, Protocol: "redfish", Address: base, Product: product})
					break
				}
			}
			if !opts.NoIPMI && probeIPMI(ctx, a, opts.IPMIPort, opts.Timeout) {
				here = append(here, Found{Addr: a, Protocol: "ipmi", Address: ipmiAddress(a, opts.IPMIPort)})
			}
			mu.Lock()
			found = append(found, here...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.SortStableFunc(found, func(x, y Found) int {
		if c := x.Addr.Compare(y.Addr); c != 0 {
			return c
		}
		return strings.Compare(y.Protocol, x.Protocol) // redfish first
	})
	return found, ctx.Err()
}

func hostForURL(a netip.Addr) string {
	if a.Is6() {
		return "[" + a.String() + "]"
	}
	return a.String()
}

func ipmiAddress(a netip.Addr, port int) string {
	if port == 623 {
		return a.String()
	}
	return net.JoinHostPort(a.String(), strconv.Itoa(port))
}

// probeRedfish reports whether base serves a Redfish service root, and
// the product it names.
func probeRedfish(ctx context.Context, c *http.Client, base string) (string, bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/redfish/v1/", nil)
	if err != nil {
		return "", false
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", false
	}
	var root struct {
		RedfishVersion string
		ODataID        string `json:"@odata.id"`
		Vendor         string
		Product        string
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&root); err != nil {
		return "", false
	}
	if root.RedfishVersion == "" && !strings.HasPrefix(root.ODataID, "/redfish/v1") {
		return "", false
	}
	return strings.TrimSpace(root.Vendor + " " + root.Product), true
}

// RMCP presence ping (DSP0136, ASF 2.0 section 3.2.4): an RMCP header of
// class ASF, then IANA number 4542 (ASF), message type 0x80, a tag, a
// reserved byte and a data length of 0. A pong is type 0x40.
const (
	asfIANA = 4542
	asfPing = 0x80
	asfPong = 0x40
)

// PresencePing is the datagram of an RMCP presence ping with tag.
func PresencePing(tag byte) []byte {
	b := []byte{0x06, 0x00, 0xff, 0x06, 0, 0, 0, 0, asfPing, tag, 0x00, 0x00}
	binary.BigEndian.PutUint32(b[4:8], asfIANA)
	return b
}

// IsPresencePong reports whether b is a pong to the ping with tag from an
// IPMI-capable entity (the "IPMI supported" bit of its supported
// entities).
func IsPresencePong(b []byte, tag byte) bool {
	if len(b) < 12+16 || b[0] != 0x06 || b[3] != 0x06 {
		return false
	}
	if binary.BigEndian.Uint32(b[4:8]) != asfIANA || b[8] != asfPong || b[9] != tag {
		return false
	}
	return b[12+8]&0x80 != 0
}

// probeIPMI sends a presence ping to addr:port and waits for its pong.
func probeIPMI(ctx context.Context, addr netip.Addr, port int, timeout time.Duration) bool {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", netip.AddrPortFrom(addr, uint16(port)).String())
	if err != nil {
		return false
	}
	defer c.Close()
	deadline := time.Now().Add(timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	c.SetDeadline(deadline)
	const tag = 0x4d
	// Twice: a lost datagram should not hide a BMC.
	buf := make([]byte, 512)
	for range 2 {
		if _, err := c.Write(PresencePing(tag)); err != nil {
			return false
		}
		c.SetReadDeadline(minTime(deadline, time.Now().Add(timeout/2)))
		for {
			n, err := c.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && time.Now().Before(deadline) {
					break
				}
				return false
			}
			if IsPresencePong(buf[:n], tag) {
				return true
			}
		}
	}
	return false
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
