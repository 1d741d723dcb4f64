package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
)

// The DHCP pool every server hands out in the lab: 241 addresses, enough
// for perfdhcp's 200 reused clients (-R 200).
const (
	dhcpSubnet    = "192.0.2.0/24"
	dhcpPoolStart = "192.0.2.10"
	dhcpPoolEnd   = "192.0.2.250"
	dhcpLeaseSecs = 3600
)

// dhcpHost is a machine a DHCP server is told of: its MAC gets its IP,
// outside the pool.
type dhcpHost struct {
	name, mac, ip string
}

// metalDHCPSite is the site `metal serve` runs for the DHCP rows: one
// network on the lab's server interface, a pool, the known machines;
// state and leases in dir.
func metalDHCPSite(dir, iface string, known ...dhcpHost) []byte {
	var machines strings.Builder
	for _, h := range known {
		fmt.Fprintf(&machines, "\nmachine %q {\n  mac = %q\n  ip  = %q\n}\n", h.name, h.mac, h.ip)
	}
	return fmt.Appendf(nil, `site "bench" {
  state  = "file://%s/state.db"
  listen = "%s:8080"
}

network "bench" {
  interface  = %q
  subnet     = %q
  gateway    = %q
  pool       = "%s-%s"
  lease_time = "%ds"
  # perfdhcp sends as a relay agent would (giaddr its own address): metal
  # answers relayed requests only from relays a network declares.
  relay_agents = [%q]
}
%s`, dir, labServerIP, iface, dhcpSubnet, labServerIP, dhcpPoolStart, dhcpPoolEnd, dhcpLeaseSecs, labClientIP, machines.String())
}

// keaConfig is kea-dhcp4's configuration for the same pool: memfile with
// persistence (a CSV appended per lease), lease file cleanup off so it
// does not run during a measurement, and its log in dir.
func keaConfig(dir, iface string, known ...dhcpHost) []byte {
	reservations := []any{}
	for _, h := range known {
		reservations = append(reservations, map[string]any{"hw-address": h.mac, "ip-address": h.ip, "hostname": h.name})
	}
	cfg := map[string]any{"Dhcp4": map[string]any{
		"interfaces-config": map[string]any{"interfaces": []string{iface}, "dhcp-socket-type": "raw"},
		"lease-database": map[string]any{
			"type": "memfile", "persist": true, "lfc-interval": 0,
			"name": filepath.Join(dir, "kea-leases4.csv"),
		},
		"valid-lifetime": dhcpLeaseSecs,
		"subnet4": []any{map[string]any{
			"id": 1, "subnet": dhcpSubnet,
			"pools":        []any{map[string]any{"pool": dhcpPoolStart + " - " + dhcpPoolEnd}},
			"option-data":  []any{map[string]any{"name": "routers", "data": labServerIP}},
			"reservations": reservations,
		}},
		"loggers": []any{map[string]any{
			"name": "kea-dhcp4", "severity": "INFO",
			"output_options": []any{map[string]any{"output": filepath.Join(dir, "kea.log")}},
		}},
	}}
	b, _ := json.MarshalIndent(cfg, "", "  ") // maps of strings: cannot fail
	return b
}

// keaEnv keeps Kea's pid and lock files in dir instead of /run/kea.
func keaEnv(dir string) []string {
	return []string{"KEA_PIDFILE_DIR=" + dir, "KEA_LOCKFILE_DIR=" + dir}
}

// dnsmasqArgs runs dnsmasq as a DHCP server only (port=0: no DNS) for the
// same pool. --no-ping: otherwise it pings each new address first, which
// holds it to about one lease per 3 s under load. Its lease file is
// written and fsynced on every change, like metal's.
func dnsmasqArgs(dir, iface string, known ...dhcpHost) []string {
	var hosts []string
	for _, h := range known {
		hosts = append(hosts, fmt.Sprintf("--dhcp-host=%s,%s,%s", h.mac, h.ip, h.name))
	}
	return append(hosts,
		"--keep-in-foreground", "--conf-file=/dev/null", "--port=0", "--no-ping",
		"--interface="+iface, "--bind-interfaces", "--dhcp-authoritative",
		fmt.Sprintf("--dhcp-range=%s,%s,255.255.255.0,%ds", dhcpPoolStart, dhcpPoolEnd, dhcpLeaseSecs),
		"--dhcp-leasefile="+filepath.Join(dir, "dnsmasq.leases"),
		"--pid-file="+filepath.Join(dir, "dnsmasq.pid"),
		"--log-facility="+filepath.Join(dir, "dnsmasq.log"),
		"--user=root",
	)
}

// tftpdArgs runs tftpd-hpa in the foreground (-L), chrooted to root (-s),
// on addr; it answers with the blksize a client asks for.
func tftpdArgs(root, addr string) []string {
	return []string{"--listen", "--foreground", "--address", addr, "--secure", "--user", "root", root}
}

// nginxConfig serves root on addr as nginx is usually set up to serve
// files: sendfile, keep-alive, an access log, two workers (one per core).
// Every path nginx would write to is under dir.
func nginxConfig(dir, root, addr string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log %[1]s/nginx-access.log;
  client_body_temp_path %[1]s/client_body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  default_type application/octet-stream;
  server {
    listen %[3]s;
    root %[2]s;
    location /ipxe/ { default_type text/plain; add_header Cache-Control no-store; }
  }
}
`, dir, root, addr)
	return []byte(b.String())
}
