package inventory

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/metal-dev/metal/internal/humanize"
	"github.com/metal-dev/metal/internal/hwinv"
)

// PowerState is the last observed power state of a machine, as its BMC
// reported it.
type PowerState string

const (
	PowerUnknown PowerState = ""
	PowerOn      PowerState = "on"
	PowerOff     PowerState = "off"
)

// State is where a machine is in its life (DESIGN.md "Per-machine life").
type State string

const (
	StateUnknown         State = "unknown"
	StateDiscovered      State = "discovered"
	StateReady           State = "ready"
	StateProvisioning    State = "provisioning"
	StateProvisioned     State = "provisioned"
	StateFailed          State = "failed"
	StateDeprovisioning  State = "deprovisioning"
	maxTransitionHistory       = 64
)

// allowed lists the forward moves of the lifecycle. Failed is reachable from
// every state and deprovisioning from every state but unknown; a failed or
// deprovisioned machine starts over from unknown or discovered.
var allowed = map[State][]State{
	StateUnknown:        {StateDiscovered, StateReady},
	StateDiscovered:     {StateReady, StateUnknown},
	StateReady:          {StateProvisioning, StateDiscovered},
	StateProvisioning:   {StateProvisioned},
	StateProvisioned:    {StateProvisioning},
	StateFailed:         {StateUnknown, StateDiscovered, StateReady, StateProvisioning},
	StateDeprovisioning: {StateUnknown, StateDiscovered, StateReady},
}

// CanTransition reports whether a machine may move from one state to another.
func CanTransition(from, to State) bool {
	if from == "" {
		from = StateUnknown
	}
	if from == to {
		return false
	}
	if to == StateFailed || (to == StateDeprovisioning && from != StateUnknown) {
		return true
	}
	for _, s := range allowed[from] {
		if s == to {
			return true
		}
	}
	return false
}

// Transition is one recorded change of lifecycle state, with why it happened.
type Transition struct {
	From  State     `json:"from"`
	To    State     `json:"to"`
	Cause string    `json:"cause"`
	At    time.Time `json:"at"`
}

// BootAction is what a machine does on its next netboot. The values match
// pxe.Action so the netboot servers can convert with a plain type cast.
type BootAction string

const (
	BootNone     BootAction = "none"
	BootDiscover BootAction = "discover"
	BootInstall  BootAction = "install"
	BootLocal    BootAction = "local"
)

// Hidden stands for a value computed from a sensitive variable wherever
// metal would otherwise show it (a label in the store, an intent's cmdline
// in the API).
const Hidden = "(sensitive)"

// BootIntent is written by the converge engine and read by the netboot
// servers; it mirrors pxe.Intent field for field.
type BootIntent struct {
	Action  BootAction `json:"action,omitempty"`
	Kernel  string     `json:"kernel,omitempty"`
	Initrds []string   `json:"initrds,omitempty"`
	Cmdline string     `json:"cmdline,omitempty"`
	Token   string     `json:"token,omitempty"`
	// Sensitive: the cmdline or a file URL was computed from a sensitive
	// variable. The netboot servers use them as they are; whatever shows
	// the intent (API, console) shows them as Hidden.
	Sensitive bool `json:"sensitive,omitempty"`
	// Task is what the install agent does once the machine boots it
	// (Action install or discover with the agent's kernel and initrd). Nil
	// when the intent boots something other than the agent.
	Task *AgentTask `json:"task,omitempty"`
}

// TaskKind is the job the install agent is given.
type TaskKind string

const (
	TaskDiscover TaskKind = "discover" // report hardware facts, then wait
	TaskInstall  TaskKind = "install"  // write an image to a disk
	TaskWipe     TaskKind = "wipe"     // erase the disks (deprovision)
)

// AgentTask is written by the converge engine into a machine's boot intent
// and handed to the agent when it asks for its task. ID changes with every
// new task so a late report about an earlier task is never mistaken for the
// current one.
type AgentTask struct {
	ID   string   `json:"id"`
	Kind TaskKind `json:"kind"`
	// Image is the site's image name; ImageURL the http URL on metal's own
	// server the agent streams the disk image from.
	Image    string `json:"image,omitempty"`
	ImageURL string `json:"image_url,omitempty"`
	// Checksum of the disk image as fetched: "sha256:<hex>" or "sha512:<hex>".
	Checksum string `json:"checksum,omitempty"`
	// Format is raw, gz, zst or xz.
	Format string `json:"format,omitempty"`
	// Disk is the target device ("/dev/vda"); empty lets the agent pick the
	// first non-removable disk.
	Disk string `json:"disk,omitempty"`
	// Wipe is how a wipe task erases each disk (default WipeQuick).
	Wipe WipeMethod `json:"wipe,omitempty"`
	// Hostname, SSHAuthorizedKeys and UserData become the cloud-init NoCloud
	// seed written beside the image.
	Hostname          string   `json:"hostname,omitempty"`
	SSHAuthorizedKeys []string `json:"ssh_authorized_keys,omitempty"`
	UserData          string   `json:"user_data,omitempty"`
	// PhoneHome is the URL (with a per-task secret) the seed tells
	// cloud-init's phone_home module to post to once the installed OS
	// booted; empty when the image's readiness is checked otherwise.
	PhoneHome string `json:"phone_home,omitempty"`
	// PhoneHomeAlso are the same phone-home at the site's other metal
	// serves, tried in order when PhoneHome does not answer (the serve
	// that wrote the task died meanwhile).
	PhoneHomeAlso []string `json:"phone_home_also,omitempty"`
	// Secret is the task's one-time agent credential (NewTaskSecret): the
	// netboot server puts it in the agent's kernel command line
	// (metal.token=) and the agent API wants it on every call about this
	// task. It dies with the task: a new task has a new secret. It never
	// leaves the server otherwise (the API and the agent's copy of the
	// task leave it out).
	Secret string `json:"secret,omitempty"`
	// NetworkConfig is the NoCloud network-config (version 2, as JSON)
	// the seed gives the installed OS; empty for DHCP.
	NetworkConfig string `json:"network_config,omitempty"`
}

// NewTaskSecret returns a fresh random task secret: 256 bits, hex.
func NewTaskSecret() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("inventory: no randomness for a task secret: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// Readiness is what the converge engine waits for after an install: the
// installed OS reporting in (cloud-init's phone-home, or a probe
// answering). It is written with the install intent and kept after it,
// so a resumed run waits for it rather than installing again.
type Readiness struct {
	// TaskID is the agent task that wrote the disk.
	TaskID string `json:"task_id"`
	// Check is the image's readiness check as written in the site
	// ("cloud-init", "tcp:22", ...).
	Check string `json:"check"`
	// SecretSHA256 is the hex SHA-256 of the phone-home URL's secret.
	SecretSHA256 string `json:"secret_sha256,omitempty"`
	// ReadyAt is when the OS reported in (zero: not yet); From is the
	// address it reported from or was probed at.
	ReadyAt time.Time `json:"ready_at,omitzero"`
	From    string    `json:"from,omitempty"`
}

// AgentPhase is how far the agent is with its task.
type AgentPhase string

const (
	AgentRunning AgentPhase = "running"
	AgentDone    AgentPhase = "done"
	AgentFailed  AgentPhase = "failed"
)

// AgentStatus is the agent's last report about a task, written by the
// server side of the agent protocol; the converge engine waits on it.
type AgentStatus struct {
	TaskID string     `json:"task_id"`
	Phase  AgentPhase `json:"phase"`
	// Step is a short word for what the agent does now ("writing",
	// "verifying", "seeding", "rebooting").
	Step string `json:"step,omitempty"`
	// Done and Total are bytes of the current step (Total 0 when unknown).
	Done  uint64 `json:"done,omitempty"`
	Total uint64 `json:"total,omitempty"`
	// Error is the cause of a failure ("checksum mismatch: want …, got …").
	Error     string    `json:"error,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Identity is what the site file declares about a machine, beyond its name
// and MAC.
type Identity struct {
	IP         netip.Addr        `json:"ip,omitzero"`
	IP6        netip.Addr        `json:"ip6,omitzero"` // reserved IPv6 address (DHCPv6)
	Image      string            `json:"image,omitempty"`
	BMCAddress string            `json:"bmc_address,omitempty"`
	Serial     string            `json:"serial,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	// Network is the site network the machine boots on; Hostname its DHCP
	// hostname (empty: the machine's name).
	Network  string `json:"network,omitempty"`
	Hostname string `json:"hostname,omitempty"`
	// SwitchPortRelay and SwitchPortCircuit are the switch port the site
	// declares the machine at (DHCP relay and option 82 circuit-id).
	SwitchPortRelay   netip.Addr `json:"switch_port_relay,omitzero"`
	SwitchPortCircuit string     `json:"switch_port_circuit,omitempty"`
	// Boot is the machine's boot path ("ipxe", "http", "secureboot"; empty
	// is "ipxe").
	Boot string `json:"boot,omitempty"`
	// SecureBoot is the site's secure_boot: "" (unset: learned from the
	// machine's BMC, FirmwareSecureBoot), "on" or "off".
	SecureBoot string `json:"secure_boot,omitempty"`
	// Wipe is how the site says the machine's disks are erased when it is
	// deprovisioned; kept here because by then the site no longer
	// declares it.
	Wipe WipeMethod `json:"wipe,omitempty"`
}

// CPU, Disk, NIC and DMI are the hardware facts the agent reports. They are
// typed for the fields metal itself reads, and keep the rest in Extra.
type CPU struct {
	Model   string `json:"model,omitempty"`
	Sockets int    `json:"sockets,omitempty"`
	Cores   int    `json:"cores,omitempty"`
	Threads int    `json:"threads,omitempty"`
}

// WipeMethod is how the agent erases a disk.
type WipeMethod string

const (
	// WipeQuick zeroes the first and last MiB: partition tables (GPT
	// and its backup), filesystem, RAID and LVM labels. The data itself
	// stays on the disk, readable by anyone who looks.
	WipeQuick WipeMethod = "quick"
	// WipeZero overwrites every byte with zeros, then reads back samples
	// across the whole disk to verify.
	WipeZero WipeMethod = "zero"
	// WipeDiscard tells the device every block is unused (BLKDISCARD,
	// TRIM/UNMAP/Deallocate): fast on SSDs and thin volumes, but whether
	// the old data is gone is the device's choice, so the read-back
	// decides; a device that still returns data is overwritten with zeros
	// and the erase record says so.
	WipeDiscard WipeMethod = "discard"
	// WipeSecure asks the drive's own erase: NVMe Sanitize (block or
	// crypto erase) or Format NVM with user-data erase, ATA SECURITY
	// ERASE UNIT, else BLKSECDISCARD; a drive that can do none of them
	// (or is frozen or locked) is overwritten as by WipeZero instead, and
	// the erase record says why. Either way it is verified.
	WipeSecure WipeMethod = "secure"
)

// WipeMethods are the methods a site file or --wipe may name.
var WipeMethods = []WipeMethod{WipeQuick, WipeDiscard, WipeZero, WipeSecure}

// Valid reports whether m is a known method ("" counts as quick).
func (m WipeMethod) Valid() bool {
	switch m {
	case "", WipeQuick, WipeDiscard, WipeZero, WipeSecure:
		return true
	}
	return false
}

// EraseRecord is what a wipe did to one disk.
type EraseRecord struct {
	Disk   string `json:"disk"`
	Serial string `json:"serial,omitempty"`
	// Method is what erased it: the method asked for, or "zero" when a
	// secure erase or a discard was not possible (Note says why).
	Method WipeMethod `json:"method"`
	// Mechanism is how the method was carried out: "nvme-sanitize-block",
	// "nvme-sanitize-crypto", "nvme-format-user-data", "ata-security-erase",
	// "blksecdiscard", "blkdiscard", "overwrite", "ends".
	Mechanism string `json:"mechanism,omitempty"`
	// Bytes is how many bytes were erased (the whole disk but for quick).
	Bytes    uint64        `json:"bytes"`
	Duration time.Duration `json:"duration_ns"`
	// Verified says the read-back found only zeros in every sample
	// (VerifiedBytes of them); a quick wipe verifies its two ends.
	Verified      bool   `json:"verified"`
	VerifiedBytes uint64 `json:"verified_bytes,omitempty"`
	Note          string `json:"note,omitempty"`
}

// String is the record on one line, as events and the command line show
// it: "sda (serial S1): zero by overwrite, 64.0 GiB in 3m2s, verified
// (18.0 MiB read back)".
func (r EraseRecord) String() string {
	disk := r.Disk
	if r.Serial != "" {
		disk += " (serial " + r.Serial + ")"
	}
	how := string(r.Method)
	if r.Mechanism != "" {
		how += " by " + r.Mechanism
	}
	v := "NOT verified"
	if r.Verified {
		v = fmt.Sprintf("verified (%s read back)", humanize.Bytes(r.VerifiedBytes))
	}
	s := fmt.Sprintf("%s: %s, %s in %s, %s", disk, how, humanize.Bytes(r.Bytes), r.Duration.Round(time.Millisecond), v)
	if r.Note != "" {
		s += ": " + r.Note
	}
	return s
}

type Disk struct {
	Name       string `json:"name"` // kernel name: sda, nvme0n1
	Model      string `json:"model,omitempty"`
	Serial     string `json:"serial,omitempty"`
	SizeBytes  uint64 `json:"size_bytes,omitempty"`
	Rotational bool   `json:"rotational,omitempty"`
}

type NIC struct {
	Name      string `json:"name"`
	MAC       string `json:"mac,omitempty"`
	SpeedMbps int    `json:"speed_mbps,omitempty"`
	Driver    string `json:"driver,omitempty"`
}

type DMI struct {
	Vendor      string `json:"vendor,omitempty"`
	Product     string `json:"product,omitempty"`
	Serial      string `json:"serial,omitempty"`
	UUID        string `json:"uuid,omitempty"`
	BIOSVersion string `json:"bios_version,omitempty"`
}

// Hardware is the last hardware report of a machine.
type Hardware struct {
	CPU         CPU               `json:"cpu"`
	MemoryBytes uint64            `json:"memory_bytes,omitempty"`
	Disks       []Disk            `json:"disks,omitempty"`
	NICs        []NIC             `json:"nics,omitempty"`
	DMI         DMI               `json:"dmi"`
	Extra       map[string]string `json:"extra,omitempty"`
	ReportedAt  time.Time         `json:"reported_at,omitzero"`
}

// Machine is one server: what the site declares (Name, MAC, Identity), what
// metal observed (Power, Hardware, State and its History) and what it should
// boot next (Intent).
type Machine struct {
	Name     string     `json:"name"`
	MAC      string     `json:"mac"` // canonical lower-case "aa:bb:cc:dd:ee:ff"
	Identity Identity   `json:"identity"`
	Power    PowerState `json:"power,omitempty"`
	// PowerAt is when Power was observed.
	PowerAt  time.Time `json:"power_at,omitzero"`
	Hardware *Hardware `json:"hardware,omitempty"`
	// FirmwareSecureBoot is whether the machine's BMC last said its
	// firmware boots with Secure Boot on (Redfish's SecureBoot
	// resource); nil: never asked, or the BMC cannot tell.
	FirmwareSecureBoot *bool `json:"firmware_secure_boot,omitempty"`
	// BMCHardware is the deep inventory the machine's BMC last reported
	// (read by the apply that provisioned it); a plan compares the BMC's
	// current one with it (a swapped disk or NIC is a finding).
	BMCHardware *hwinv.Report `json:"bmc_hardware,omitempty"`
	State       State         `json:"state"`
	History     []Transition  `json:"history,omitempty"`
	Intent      BootIntent    `json:"intent"`
	// Agent is the install agent's last report about Intent.Task.
	Agent *AgentStatus `json:"agent,omitempty"`
	// Ready is the last install's readiness: what it waits for, and when
	// it came.
	Ready *Readiness `json:"ready,omitempty"`
	// Applied is the site's declaration of this machine, flattened to
	// attribute names and values as converge/plan shows them, that the
	// converge engine last carried out. The next plan diffs the site
	// against it; nil means nothing was ever applied.
	Applied map[string]string `json:"applied,omitempty"`

	// Revision is the store revision of the last write of this machine. On
	// PutMachine it is the expected revision: 0 creates, anything else must
	// match what is stored or the write fails with ErrConflict.
	Revision int64 `json:"-"`
}

// Declared secure_boot values (Identity.SecureBoot).
const (
	SecureBootUnset = ""
	SecureBootOn    = "on"
	SecureBootOff   = "off"
)

// BootPath is the chain the machine's firmware is sent through: the
// declared one, except that a machine whose BMC said Secure Boot is on,
// and whose site left secure_boot unset, gets the signed chain
// ("secureboot") instead of iPXE, which its firmware would refuse.
func (m Machine) BootPath() string {
	b := m.Identity.Boot
	learned := m.Identity.SecureBoot == SecureBootUnset && m.FirmwareSecureBoot != nil && *m.FirmwareSecureBoot
	if learned && (b == "" || b == "ipxe" || b == "http") {
		return "secureboot"
	}
	return b
}

// Since is when the machine entered its current state (zero if never moved).
func (m Machine) Since() time.Time {
	if len(m.History) == 0 {
		return time.Time{}
	}
	return m.History[len(m.History)-1].At
}

// SetState moves the machine to state to, recording cause and time. It refuses
// moves the lifecycle does not allow. The history keeps the last 64 moves so a
// machine's record stays small however often it is reinstalled.
func (m *Machine) SetState(to State, cause string, at time.Time) error {
	from := m.State
	if from == "" {
		from = StateUnknown
	}
	if !CanTransition(from, to) {
		return fmt.Errorf("machine %s: %s → %s is not a lifecycle move: %w", m.Name, from, to, ErrInvalid)
	}
	m.State = to
	m.History = append(m.History, Transition{From: from, To: to, Cause: cause, At: at.UTC()})
	if n := len(m.History); n > maxTransitionHistory {
		m.History = append([]Transition(nil), m.History[n-maxTransitionHistory:]...)
	}
	return nil
}

// NormalizeMAC returns the canonical form of a MAC address, the one used in
// keys and records.
func NormalizeMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil {
		return "", fmt.Errorf("mac %q: %w", s, ErrInvalid)
	}
	return hw.String(), nil
}

// Lease is one DHCP lease.
type Lease struct {
	MAC      string     `json:"mac"`
	IP       netip.Addr `json:"ip"`
	Hostname string     `json:"hostname,omitempty"`
	Expiry   time.Time  `json:"expiry"`
	Revision int64      `json:"-"`
}

// Expired reports whether the lease has run out at now.
func (l Lease) Expired(now time.Time) bool { return !now.Before(l.Expiry) }

// AllocateRequest asks for an address for MAC from the inclusive range
// [Start, End].
type AllocateRequest struct {
	MAC      string
	Hostname string
	Start    netip.Addr
	End      netip.Addr
	// Prefer is tried first if it is in the range and free (DHCP option 50).
	Prefer netip.Addr
	// Exclude lists addresses in the range that are never handed out (the
	// gateway, addresses reserved for declared machines).
	Exclude []netip.Addr
	TTL     time.Duration
}

// EventKind names a step of a machine's boot timeline or another happening.
type EventKind string

const (
	EventDHCPDiscover EventKind = "dhcp-discover"
	EventDHCPOffer    EventKind = "dhcp-offer"
	EventDHCPAck      EventKind = "dhcp-ack"
	EventTFTP         EventKind = "tftp"
	EventScript       EventKind = "script"
	EventKernel       EventKind = "kernel"
	EventInitrd       EventKind = "initrd"
	EventImage        EventKind = "image"
	EventAgent        EventKind = "agent"
	EventState        EventKind = "state"
	EventPower        EventKind = "power"
	EventApply        EventKind = "apply"
	// EventSecurity records a refused attempt on a machine's credentials:
	// an agent call without its task's secret, a boot script fetched again
	// after its agent started.
	EventSecurity EventKind = "security"
	// EventErase is the erase record of one disk of a wipe (Event.Erase):
	// kept after the machine leaves the store, as its proof of erasure.
	EventErase EventKind = "erase"
)

// Event is one entry of the append-only event log. Seq is assigned by the
// store, gap-free and increasing; Time is when it happened.
type Event struct {
	Seq     int64     `json:"seq"`
	Time    time.Time `json:"time"`
	Machine string    `json:"machine,omitempty"`
	MAC     string    `json:"mac,omitempty"`
	Kind    EventKind `json:"kind"`
	Message string    `json:"message,omitempty"`
	// Erase is set on EventErase events.
	Erase *EraseRecord `json:"erase,omitempty"`
}

// EventQuery selects events. With Machine set, only that machine's events
// (matched by name, or by MAC for events of machines not yet named).
type EventQuery struct {
	Machine string
	MAC     string
	// AfterSeq returns only events with Seq > AfterSeq.
	AfterSeq int64
	// Limit caps the number of events returned (0: no cap).
	Limit int
}

// RunState is the state of an apply run, and of one machine's step in it.
type RunState string

const (
	RunPending     RunState = "pending"
	RunRunning     RunState = "running"
	RunDone        RunState = "done"
	RunFailed      RunState = "failed"
	RunInterrupted RunState = "interrupted"
)

// ApplyRun is one `metal apply`. An interrupted apply is resumed by loading
// its run (same PlanDigest) and carrying on with the machines whose step is
// not done.
type ApplyRun struct {
	ID         string    `json:"id"`
	PlanDigest string    `json:"plan_digest"`
	State      RunState  `json:"state"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// Canary and BatchSize are the rollout's shape as the engine ran it
	// (the site's rollout block), so the console can show the batches.
	Canary    int `json:"canary,omitempty"`
	BatchSize int `json:"batch_size,omitempty"`
	// MaxFailures is the halt rule the run was started with: it stops
	// once more machines than this have failed.
	MaxFailures int `json:"max_failures"`
	// HaltReason says why a run stopped before finishing (too many
	// failures, an operator's halt); empty while it runs or when it ended
	// on its own.
	HaltReason string `json:"halt_reason,omitempty"`
	// Owner names the metal (serve or apply: host, machine-id and pid)
	// carrying the run out while it holds the site's apply leadership;
	// empty for runs carried out without it (a console's reprovision). A
	// run still running whose owner's leadership lapsed is an orphan that
	// another metal serve sharing the store takes over, changing Owner
	// with a compare-and-swap on the run's revision (apply.Orphan).
	Owner string `json:"owner,omitempty"`
	// Options are the run's settings as its first owner was given them,
	// so a metal that takes it over carries it on alike.
	Options RunOptions `json:"options,omitzero"`
	// Steps is filled by ApplyRun/ApplyRuns from the per-machine records and
	// ignored by PutApplyRun; write steps with PutApplyStep.
	Steps    map[string]ApplyStep `json:"-"`
	Revision int64                `json:"-"`
}

// RunOptions are the settings of an apply run that outlive the metal that
// started it.
type RunOptions struct {
	AllowDestroy bool          `json:"allow_destroy,omitempty"`
	Wipe         WipeMethod    `json:"wipe,omitempty"`
	StepTimeout  time.Duration `json:"step_timeout,omitempty"`
	AgentTimeout time.Duration `json:"agent_timeout,omitempty"`
	BootTimeout  time.Duration `json:"boot_timeout,omitempty"`
}

// Unfinished returns the machines of the run whose step is not done, sorted.
func (r ApplyRun) Unfinished() []string {
	var out []string
	for name, s := range r.Steps {
		if s.State != RunDone {
			out = append(out, name)
		}
	}
	sortStrings(out)
	return out
}

// ApplyStep is where one machine is in an apply run. Each machine's step is
// its own record, so batches running in parallel never contend on one key.
type ApplyStep struct {
	Machine string `json:"machine"`
	Step    string `json:"step"` // engine-defined: "power-off", "install", ...
	// Batch is the 1-based batch the machine is rolled out in; batch 1 is
	// the canary when the run has one (Canary > 0). 0: not assigned.
	Batch     int       `json:"batch,omitempty"`
	State     RunState  `json:"state"`
	Error     string    `json:"error,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
	Revision  int64     `json:"-"`
}
