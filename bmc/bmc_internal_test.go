package bmc

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/internal/hwinv"
)

func TestParseAddress(t *testing.T) {
	tests := map[string]struct {
		addr     string
		rf, ipmi endpoint
		err      bool
	}{
		"bare host":      {addr: "10.0.0.5", rf: endpoint{"https", "10.0.0.5", "443"}, ipmi: endpoint{"", "10.0.0.5", "623"}},
		"host and port":  {addr: "bmc1.lab:8443", rf: endpoint{"https", "bmc1.lab", "8443"}, ipmi: endpoint{"", "bmc1.lab", "8443"}},
		"http lab BMC":   {addr: "http://127.0.0.1:8000", rf: endpoint{"http", "127.0.0.1", "8000"}, ipmi: endpoint{"", "127.0.0.1", "8000"}},
		"http no port":   {addr: "http://bmc", rf: endpoint{"http", "bmc", "80"}, ipmi: endpoint{"", "bmc", "623"}},
		"https url":      {addr: "https://10.10.1.7/redfish/v1/", rf: endpoint{"https", "10.10.1.7", "443"}, ipmi: endpoint{"", "10.10.1.7", "623"}},
		"ipv6":           {addr: "[fd00::5]:623", rf: endpoint{"https", "fd00::5", "623"}, ipmi: endpoint{"", "fd00::5", "623"}},
		"credentials":    {addr: "https://root:calvin@10.0.0.5", err: true},
		"bad port":       {addr: "10.0.0.5:99999", err: true},
		"unknown scheme": {addr: "ftp://10.0.0.5", err: true},
		"no host":        {addr: "https://:443", err: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			rf, ipmi, err := parseAddress(tc.addr)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if tc.err {
				return
			}
			if diff := cmp.Diff([]endpoint{tc.rf, tc.ipmi}, []endpoint{rf, ipmi}, cmp.AllowUnexported(endpoint{})); diff != "" {
				t.Errorf("endpoints (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParsePower(t *testing.T) {
	tests := map[string]Power{
		"On": PowerOn, "Off": PowerOff, "Chassis Power is on\n": PowerOn, "Chassis Power is off": PowerOff,
		"PoweringOn": PowerUnknown, "PoweringOff": PowerUnknown, "Paused": PowerUnknown, "": PowerUnknown,
	}
	for in, want := range tests {
		if got := parsePower(in); got != want {
			t.Errorf("parsePower(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestClassify(t *testing.T) {
	tests := map[string]struct {
		err      error
		elapsed  time.Duration
		protocol string
		kind     error
		retry    bool
	}{
		"refused":             {err: errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), protocol: ProtocolRedfish, kind: ErrUnreachable, retry: true},
		"reset":               {err: errors.New("read: connection reset by peer"), protocol: ProtocolRedfish, kind: ErrUnreachable, retry: true},
		"http client timeout": {err: errors.New("Get ...: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"), protocol: ProtocolRedfish, kind: ErrTimeout, retry: true},
		"untrusted cert":      {err: errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority"), protocol: ProtocolRedfish, kind: ErrTLS},
		"ipmi refused fast":   {err: errors.New("Error: Unable to establish IPMI v2 / RMCP+ session: exit status 1"), elapsed: 50 * time.Millisecond, protocol: ProtocolIPMI, kind: ErrCredentials},
		"ipmi no answer":      {err: errors.New("Error: Unable to establish IPMI v2 / RMCP+ session: exit status 1"), elapsed: 6 * time.Second, protocol: ProtocolIPMI, kind: ErrUnreachable, retry: true},
		"unknown":             {err: errors.New("something odd"), protocol: ProtocolRedfish},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := classify(tc.err, tc.elapsed, tc.protocol, "bmc:1")
			if f.kind != tc.kind || f.retry != tc.retry {
				t.Errorf("classify = kind %v retry %v, want %v %v", f.kind, f.retry, tc.kind, tc.retry)
			}
		})
	}
}

// TestSecretNeverPrints: every way a Config can be printed, logged or
// marshalled hides the password.
func TestSecretNeverPrints(t *testing.T) {
	cfg := Config{Machine: "m", Address: "10.0.0.1", Username: "root", Password: "hunter2-secret"}
	var logBuf strings.Builder
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("cfg", "cfg", cfg, "pw", cfg.Password)
	js, _ := json.Marshal(cfg)
	for _, s := range []string{fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, cfg.Password), string(js), logBuf.String()} {
		if strings.Contains(s, "hunter2") {
			t.Errorf("password printed: %s", s)
		}
	}
}

// TestRedactHandler: text that a library logs with the password in it
// reaches the log scrubbed.
func TestRedactHandler(t *testing.T) {
	var buf strings.Builder
	l := slog.New(redactHandler{next: slog.NewTextHandler(&buf, nil), r: newRedactor("root", "hunter2")})
	l.With("pre", "x hunter2").Info("pass=hunter2", "err", errors.New("login hunter2 failed"), slog.Group("g", "k", "hunter2"))
	if strings.Contains(buf.String(), "hunter2") || !strings.Contains(buf.String(), redacted) {
		t.Errorf("log not scrubbed: %s", buf.String())
	}
}

// TestParseSDR reads `ipmitool sdr elist` lines as BMCs print them: the
// BMC's verdict per threshold sensor, a supply's states, sensors without
// a reading and sensors metal does not keep (voltages).
func TestParseSDR(t *testing.T) {
	out := `Inlet Temp       | 04h | ok  |  7.1 | 23 degrees C
CPU Temp         | 01h | ucr |  3.1 | 96 degrees C
Exhaust Temp     | 05h | unc |  7.1 | 113 degrees F
Temp             | 0Eh | ns  |  3.1 | Disabled
Fan1 RPM         | 30h | ok  |  7.1 | 5880 RPM
Fan2 RPM         | 31h | lcr |  7.1 | 240 RPM
Fan3 Duty        | 32h | ok  | 29.3 | 40 percent
PS1 Status       | 62h | ok  | 10.1 | Presence detected
PS2 Status       | 63h | ok  | 10.2 | Presence detected, Power Supply AC lost
PS3 Status       | 64h | ok  | 10.3 | 
Voltage 1        | 6Ch | ok  | 10.1 | 230 Volts
`
	var r hwinv.Report
	parseSDR(out, &r)
	want := hwinv.Report{
		Temperatures: []hwinv.Sensor{{Name: "Inlet Temp", Reading: 23, Units: "Cel", Health: "OK"},
			{Name: "CPU Temp", Reading: 96, Units: "Cel", Health: "Critical"},
			{Name: "Exhaust Temp", Reading: 45, Units: "Cel", Health: "Warning"}},
		Fans: []hwinv.Sensor{{Name: "Fan1 RPM", Reading: 5880, Units: "RPM", Health: "OK"},
			{Name: "Fan2 RPM", Reading: 240, Units: "RPM", Health: "Critical"},
			{Name: "Fan3 Duty", Reading: 40, Units: "Percent", Health: "OK"}},
		PSUs: []hwinv.PSU{{Name: "PS1 Status", Health: "OK"}, {Name: "PS2 Status", Health: "Critical"}},
	}
	if d := cmp.Diff(want, r); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}
