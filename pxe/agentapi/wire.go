package agentapi

import "time"

// The protocol's own message types. They are what an agent built by one
// metal and a server of another agree on, so they change only in ways both
// can read; the server converts them to and from the inventory's records
// at its edge, and the store's types may change freely behind it.

// TaskKind is what a task asks of the agent.
type TaskKind string

const (
	TaskDiscover TaskKind = "discover" // report hardware facts, then wait
	TaskInstall  TaskKind = "install"  // write an image to a disk
	TaskWipe     TaskKind = "wipe"     // erase the disks (deprovision)
)

// Task is the agent's job, the answer to GET task. ID changes with every
// new task, so a late report about an earlier one is never mistaken for
// the current one.
type Task struct {
	ID   string   `json:"id"`
	Kind TaskKind `json:"kind"`
	// Image is the site's image name; ImageURL the URL on metal's HTTP
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
	// NetworkConfig is the NoCloud network-config (version 2, as JSON)
	// the seed gives the installed OS; empty for DHCP.
	NetworkConfig string `json:"network_config,omitempty"`
}

// Phase is how far the agent is with its task.
type Phase string

const (
	PhaseRunning Phase = "running"
	PhaseDone    Phase = "done"
	PhaseFailed  Phase = "failed"
)

// WipeMethod is how the agent erases a disk: quick zeroes the first and
// last MiB; zero overwrites every byte; discard tells the device every
// block is unused and overwrites when old data still reads back; secure
// asks the drive to erase itself and overwrites when it cannot. All but
// quick read back samples of the whole disk.
type WipeMethod string

const (
	WipeQuick   WipeMethod = "quick"
	WipeZero    WipeMethod = "zero"
	WipeDiscard WipeMethod = "discard"
	WipeSecure  WipeMethod = "secure"
)

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
	// Method is what erased it: the method asked for, or zero when a
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

// Hardware is the facts report: what the agent found of the machine.
// Typed for the fields metal reads; the rest is in Extra.
type Hardware struct {
	CPU         CPU               `json:"cpu"`
	MemoryBytes uint64            `json:"memory_bytes,omitempty"`
	Disks       []Disk            `json:"disks,omitempty"`
	NICs        []NIC             `json:"nics,omitempty"`
	DMI         DMI               `json:"dmi"`
	Extra       map[string]string `json:"extra,omitempty"`
}

type CPU struct {
	Model   string `json:"model,omitempty"`
	Sockets int    `json:"sockets,omitempty"`
	Cores   int    `json:"cores,omitempty"`
	Threads int    `json:"threads,omitempty"`
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
