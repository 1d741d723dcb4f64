// Package bmc controls machines through their baseboard management
// controllers, over Redfish or IPMI, using bmclib v2 underneath.
//
// The converge engine sees only the small Driver interface; bmclib's
// providers, filters and (ok bool, err error) results stay inside this
// package. Every call has a timeout, transient failures are retried, power
// transitions are verified by polling, and credentials never reach a log
// line, an error string or JSON.
package bmc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/metal-dev/metal/internal/hwinv"
)

// Driver is what the converge engine needs from one machine's BMC.
type Driver interface {
	// PowerState reports whether the machine is on or off.
	PowerState(ctx context.Context) (Power, error)
	// Power performs action and waits until the machine reaches the state the
	// action implies (on, or off); a BMC that accepts the request but never
	// gets there is an error.
	Power(ctx context.Context, action PowerAction) error
	// SetBootDevice chooses what the machine boots from next.
	SetBootDevice(ctx context.Context, dev BootDevice, opts BootOptions) error
	// Inventory reads the machine's identity and NICs from the BMC.
	Inventory(ctx context.Context) (Inventory, error)
}

// MediaDriver is a Driver that can also attach virtual media (Redfish only).
type MediaDriver interface {
	Driver
	// InsertMedia attaches the image at url as a virtual CD (or kind).
	InsertMedia(ctx context.Context, kind MediaKind, url string) error
	// EjectMedia detaches any virtual media.
	EjectMedia(ctx context.Context) error
}

// Power is a machine's power state as metal sees it.
type Power string

const (
	PowerOn      Power = "on"
	PowerOff     Power = "off"
	PowerUnknown Power = "unknown"
)

// PowerAction is something a BMC can be asked to do with power.
type PowerAction string

const (
	ActionOn    PowerAction = "on"    // power up; no-op if already on
	ActionOff   PowerAction = "off"   // hard power off, no OS shutdown
	ActionSoft  PowerAction = "soft"  // ACPI shutdown; the OS must cooperate
	ActionCycle PowerAction = "cycle" // off then on; powers on a machine that is off
	ActionReset PowerAction = "reset" // warm reset; powers on a machine that is off
)

// target is the power state an action must end in.
func (a PowerAction) target() (Power, error) {
	switch a {
	case ActionOn, ActionCycle, ActionReset:
		return PowerOn, nil
	case ActionOff, ActionSoft:
		return PowerOff, nil
	}
	return "", fmt.Errorf("unknown power action %q (want on, off, soft, cycle or reset)", string(a))
}

// BootDevice is where a machine boots from next.
type BootDevice string

const (
	BootPXE   BootDevice = "pxe"
	BootDisk  BootDevice = "disk"
	BootCDROM BootDevice = "cdrom"
	BootBIOS  BootDevice = "bios"
)

func (d BootDevice) valid() bool {
	switch d {
	case BootPXE, BootDisk, BootCDROM, BootBIOS:
		return true
	}
	return false
}

// BootOptions qualify a boot device choice.
type BootOptions struct {
	// Persistent keeps the choice for every boot, not only the next one.
	Persistent bool `json:"persistent"`
	// UEFI asks for a UEFI boot rather than legacy BIOS.
	UEFI bool `json:"uefi"`
}

// MediaKind is the kind of virtual media device an image is attached as.
type MediaKind string

const (
	MediaCD  MediaKind = "CD"
	MediaDVD MediaKind = "DVD"
	MediaUSB MediaKind = "USBStick"
)

// Inventory is what a BMC tells about its machine.
type Inventory struct {
	Manufacturer string   `json:"manufacturer,omitempty"`
	Model        string   `json:"model,omitempty"`
	Serial       string   `json:"serial,omitempty"`
	BIOSVersion  string   `json:"bios_version,omitempty"`
	MACs         []string `json:"macs,omitempty"`
	Power        Power    `json:"power"`
	// Hardware is the deep inventory (CPUs, memory, disks, NICs, PSUs,
	// fans and temperatures, firmware versions); nil when the protocol
	// has none.
	Hardware *hwinv.Report `json:"hardware,omitempty"`
	// Gaps name the parts of the deep inventory the BMC did not give.
	Gaps []string `json:"gaps,omitempty"`
}

// Protocols a Config may name.
const (
	ProtocolRedfish = "redfish"
	ProtocolIPMI    = "ipmi"
	ProtocolAuto    = "auto" // Redfish first, then IPMI
)

// Redfish authentication schemes (Config.RedfishAuth, Client.Auth).
const (
	// AuthAuto uses a session when the service offers a SessionService
	// and creating one works, else HTTP Basic auth.
	AuthAuto = ""
	// AuthSession logs in once (POST to the SessionService) and sends the
	// session's X-Auth-Token.
	AuthSession = "session"
	// AuthBasic sends the username and password with every request, as
	// services without a SessionService (sushy-tools, some BMCs) need.
	AuthBasic = "basic"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultTimeout         = 30 * time.Second
	DefaultPowerWait       = 30 * time.Second
	DefaultRetries         = 3
	DefaultIPMICipherSuite = "3"
)

// Secret holds a credential. It prints, logs and marshals as "REDACTED" so
// that a Config can be logged or dumped without leaking the password.
type Secret string

const redacted = "REDACTED"

func (Secret) String() string               { return redacted }
func (Secret) GoString() string             { return redacted }
func (Secret) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
func (s Secret) Format(f fmt.State, _ rune) { fmt.Fprint(f, redacted) }
func (s Secret) reveal() string             { return string(s) }

// Config says how to reach one machine's BMC.
type Config struct {
	// Machine names the machine in errors and logs.
	Machine string `json:"machine"`
	// Protocol is "redfish", "ipmi" or "auto" (default "auto").
	Protocol string `json:"protocol"`
	// Address is host, host:port, or for Redfish a URL whose scheme may be
	// http:// (lab BMCs) or https:// (the default). Default ports: Redfish
	// 443 (80 for http), IPMI 623.
	Address  string `json:"address"`
	Username string `json:"username"`
	// UsernameSecret: the username is secret too (it came from a
	// sensitive variable); it is redacted as the password is.
	UsernameSecret bool   `json:"-"`
	Password       Secret `json:"password"`
	// RedfishAuth is AuthAuto (default), AuthSession or AuthBasic.
	RedfishAuth string `json:"redfish_auth,omitempty"`
	// InsecureTLS skips certificate verification; off by default.
	InsecureTLS bool `json:"insecure_tls,omitempty"`
	// CAFile is a PEM bundle trusted in addition to the system roots.
	CAFile string `json:"ca_file,omitempty"`
	// System selects one Redfish ComputerSystem (by Name) when a service
	// manages several machines, as a chassis manager or metal's virtual
	// BMC does.
	System string `json:"system,omitempty"`
	// Timeout bounds each attempt of each call (default 30s).
	Timeout time.Duration `json:"timeout,omitempty"`
	// PowerWait bounds how long a power action may take to show in the
	// reported state (default 30s).
	PowerWait time.Duration `json:"power_wait,omitempty"`
	// Retries is how many times a call is tried when it fails transiently
	// (default 3; 1 means no retry).
	Retries int `json:"retries,omitempty"`
	// IPMICipherSuite is passed to ipmitool -C (default 3, which every
	// IPMI 2.0 BMC supports; leaving ipmitool to probe costs seconds).
	IPMICipherSuite string `json:"ipmi_cipher_suite,omitempty"`
	// IPMIToolPath overrides the ipmitool found on PATH.
	IPMIToolPath string `json:"ipmitool_path,omitempty"`
	// Observe, when set, is told of every call once it ends (retries
	// included): the operation ("power status", "inventory", ...), the protocol
	// used ("redfish", "ipmi"; "auto" if none answered), how long it took
	// and its error. Metrics time them; it must be quick.
	Observe func(op, protocol string, took time.Duration, err error) `json:"-"`
}

func (c Config) withDefaults() Config {
	if c.Protocol == "" {
		c.Protocol = ProtocolAuto
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.PowerWait <= 0 {
		c.PowerWait = DefaultPowerWait
	}
	if c.Retries <= 0 {
		c.Retries = DefaultRetries
	}
	if c.IPMICipherSuite == "" {
		c.IPMICipherSuite = DefaultIPMICipherSuite
	}
	return c
}

// Sentinel errors; every error from this package that has one of these
// causes matches it with errors.Is.
var (
	ErrCredentials     = errors.New("the BMC refused the credentials")
	ErrUnreachable     = errors.New("the BMC is unreachable")
	ErrTimeout         = errors.New("the BMC did not answer in time")
	ErrBMCFailure      = errors.New("the BMC reported an internal error")
	ErrPowerNotReached = errors.New("the BMC reported success but the power state did not change")
	ErrUnsupported     = errors.New("not supported by this BMC")
	ErrNotRedfish      = errors.New("no Redfish service answers at this address")
	ErrTLS             = errors.New("the BMC's TLS certificate is not trusted")
)

// Error is a failed BMC call. Its message names the machine and the BMC and
// says what to check.
type Error struct {
	Machine string // machine name, may be empty
	Address string // BMC address as configured (never carries credentials)
	Op      string // "power on", "boot device", ...
	Kind    error  // one of the sentinels above, or nil
	Hint    string // what the operator should check
	Err     error  // underlying cause
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Machine != "" {
		fmt.Fprintf(&b, "machine %s: ", e.Machine)
	}
	fmt.Fprintf(&b, "bmc %s: %s: ", e.Address, e.Op)
	switch {
	case e.Kind != nil && e.Err != nil:
		fmt.Fprintf(&b, "%v: %v", e.Kind, e.Err)
	case e.Kind != nil:
		b.WriteString(e.Kind.Error())
	case e.Err != nil:
		b.WriteString(e.Err.Error())
	}
	if e.Hint != "" {
		fmt.Fprintf(&b, " (%s)", e.Hint)
	}
	return b.String()
}

func (e *Error) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}
