package virtual

import (
	"fmt"
	"net"
	"strings"
)

// QEMUSpec is one machine as given on the command line of `metal vbmc`:
//
//	name=vm-01,qmp=/run/vm-01.qmp,mac=52:54:00:00:01:01,listen=127.0.0.1:8001,qemu-cmd=qemu-system-x86_64 -m 512 ...
//
// qemu-cmd must come last: everything after it, commas included, is the
// QEMU command line (split on spaces).
type QEMUSpec struct {
	Name    string
	QMP     string
	Command []string
	CDROM   string
	Serial  string
	MACs    []string
	// Listen, if set, gives this machine its own listener (one BMC per
	// port) instead of the shared one.
	Listen string
}

// ParseQEMUSpec parses a --machine value.
func ParseQEMUSpec(s string) (QEMUSpec, error) {
	var spec QEMUSpec
	rest := s
	if i := strings.Index(s, "qemu-cmd="); i >= 0 {
		if i > 0 && s[i-1] != ',' {
			return spec, fmt.Errorf("machine %q: qemu-cmd must be a key of its own", s)
		}
		spec.Command = strings.Fields(s[i+len("qemu-cmd="):])
		if len(spec.Command) == 0 {
			return spec, fmt.Errorf("machine %q: qemu-cmd is empty", s)
		}
		rest = strings.TrimSuffix(s[:i], ",")
	}
	for _, kv := range strings.Split(rest, ",") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || v == "" {
			return spec, fmt.Errorf("machine %q: %q is not key=value", s, kv)
		}
		switch k {
		case "name":
			spec.Name = v
		case "qmp":
			spec.QMP = v
		case "cdrom":
			spec.CDROM = v
		case "serial":
			spec.Serial = v
		case "mac":
			if _, err := net.ParseMAC(v); err != nil {
				return spec, fmt.Errorf("machine %q: %w", s, err)
			}
			spec.MACs = append(spec.MACs, strings.ToLower(v))
		case "listen":
			if _, _, err := net.SplitHostPort(v); err != nil {
				return spec, fmt.Errorf("machine %q: listen: %w", s, err)
			}
			spec.Listen = v
		default:
			return spec, fmt.Errorf("machine %q: unknown key %q (want name, qmp, qemu-cmd, cdrom, mac, serial, listen)", s, k)
		}
	}
	if spec.Name == "" || spec.QMP == "" {
		return spec, fmt.Errorf("machine %q: name and qmp are required", s)
	}
	return spec, nil
}
