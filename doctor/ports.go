package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/metal-dev/metal/site"
)

// portProbe is one socket `metal serve` will bind, bound the same way.
type portProbe struct {
	proto  string // "udp" or "tcp"
	addr   string // as serve binds it
	device string // SO_BINDTODEVICE, as the DHCP server binds
	what   string // what serve uses it for
}

// checkPorts binds, for an instant, every port serve will: DHCP (67, and
// 4011 in proxy mode) on each served interface, TFTP, HTTP. A port in use
// is reported with its holder; if the holder is a `metal serve` of this
// same site, that is fine.
func checkPorts(opts Options, self selfRef) []Check {
	var probes []portProbe
	seen := map[string]bool{} // one DHCP server per interface, for all its networks
	for _, n := range opts.Site.Networks {
		if n.Mode == site.ModeOff || n.Interface == "" || seen[n.Interface] {
			continue
		}
		seen[n.Interface] = true
		probes = append(probes, portProbe{"udp", "0.0.0.0:67", n.Interface, "DHCP on " + n.Interface})
		if n.Mode == site.ModeProxy {
			probes = append(probes, portProbe{"udp", "0.0.0.0:4011", n.Interface, "proxyDHCP boot server discovery on " + n.Interface})
		}
	}
	probes = append(probes,
		portProbe{proto: "udp", addr: opts.TFTPAddr, what: "TFTP"},
		portProbe{proto: "tcp", addr: opts.Listen, what: "HTTP boot, API and console"},
	)
	var out []Check
	for _, p := range probes {
		out = append(out, p.check(self))
	}
	return out
}

func (p portProbe) check(self selfRef) Check {
	_, port, _ := net.SplitHostPort(p.addr)
	c := Check{Kind: KindPort, Subject: "port " + port + "/" + p.proto}
	if p.device != "" {
		c.Subject += " on " + p.device
	}
	err := p.bind()
	switch {
	case err == nil:
		c.Status, c.Detail = OK, fmt.Sprintf("%s is free for %s", p.addr, p.what)
	case errors.Is(err, syscall.EADDRINUSE):
		c.Status, c.Detail, c.Fix = p.inUse(port, self)
	case errors.Is(err, syscall.EACCES):
		c.Status = Warn
		c.Detail = fmt.Sprintf("cannot bind %s to check it (%s needs root)", p.addr, p.what)
		c.Fix = "run metal doctor and metal serve as root"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		c.Status = Fail
		c.Detail = fmt.Sprintf("%s is not an address of this host", p.addr)
		c.Fix = "listen on an address this host has (`ip addr`), or on :PORT for all of them"
	case errors.Is(err, syscall.ENODEV):
		// The interface check already fails, with what to do.
		c.Status = Skip
		c.Detail = fmt.Sprintf("not checked: interface %s does not exist", p.device)
	default:
		c.Status, c.Detail = Fail, fmt.Sprintf("cannot bind %s: %v", p.addr, err)
		c.Fix = "check the address; `metal serve --help` shows how to change it"
	}
	return c
}

// bind opens and closes the socket serve would open.
func (p portProbe) bind() error {
	lc := net.ListenConfig{}
	if p.device != "" {
		lc.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), p.device) })
			return errors.Join(err, serr)
		}
	}
	ctx := context.Background()
	if p.proto == "tcp" {
		ln, err := lc.Listen(ctx, "tcp", p.addr)
		if err != nil {
			return err
		}
		return ln.Close()
	}
	c, err := lc.ListenPacket(ctx, "udp4", p.addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// inUse names who holds the port.
func (p portProbe) inUse(port string, self selfRef) (Status, string, string) {
	n, _ := strconv.Atoi(port)
	holders := socketHolders(p.proto, n)
	for _, h := range holders {
		if h.servesSite(self) {
			return OK, fmt.Sprintf("%s is held by a running metal serve of this site (PID %d)", p.addr, h.pid), ""
		}
	}
	detail := fmt.Sprintf("%s is in use", p.addr)
	if len(holders) > 0 {
		detail += " by " + holders[0].String()
	}
	fix := fmt.Sprintf("stop what holds port %s, or serve %s elsewhere", port, p.what)
	switch {
	case len(holders) > 0 && holders[0].isMetalServe():
		fix = fmt.Sprintf("another site's metal serve holds it: stop PID %d, or give this site other ports", holders[0].pid)
	case p.what == "TFTP":
		fix = "stop the other TFTP server (systemctl stop tftpd-hpa?), or run metal serve --tftp-addr with another address"
	case p.proto == "tcp":
		fix = "stop what listens there, or set the site's listen (or metal serve --listen) to a free address"
	case port == "67" || port == "4011":
		fix = "stop the other DHCP server on this host (dnsmasq? isc-dhcp-server?); beside a DHCP server on another host, use mode = \"proxy\""
	}
	if len(holders) == 0 && os.Geteuid() != 0 {
		detail += " (run as root to see by whom)"
	}
	return Fail, detail, fix
}
