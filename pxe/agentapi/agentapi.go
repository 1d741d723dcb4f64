// Package agentapi is the protocol between metal and its install agent:
// its paths, its messages, their checks, and the Go client the agent
// uses. It knows nothing of the inventory: pxe/storeagent is the server
// that answers it from the store.
//
// The agent runs on the machine (metal as /init of an initramfs) and speaks
// plain JSON over HTTP to metal's boot server, under Prefix. Every path
// names the MAC the machine booted from; {mac} is "aa:bb:cc:dd:ee:ff" or
// "aa-bb-cc-dd-ee-ff":
//
//	POST /agent/v1/{mac}/facts          body: Hardware  → 204
//	GET  /agent/v1/{mac}/task                           → 200 TaskResponse
//	POST /agent/v1/{mac}/status         body: Status    → 204
//	POST /agent/v1/{mac}/ready/{secret} (the installed OS's phone-home) → 204
//
// task answers the agent's job, or no task (null), which means "report,
// then ask again after PollSeconds"; a task of kind discover means the
// same. A status about a task that is no longer the machine's current
// one is refused with 409 Conflict (ErrStaleTask): the agent then asks
// for its task again.
//
// Every call about a machine with a task carries the task's one-time
// secret (the boot script passes it on the kernel command line as
// metal.token=) in TokenHeader. Bodies are capped (MaxFactsBytes,
// MaxStatusBytes) and validated; malformed JSON gets 400 with the reason.
package agentapi

import (
	"fmt"
	"net"
	"strings"
	"unicode/utf8"
)

// Prefix is where the agent protocol is mounted on metal's HTTP server.
const Prefix = "/agent/"

// TokenHeader carries the task's secret on every agent call.
const TokenHeader = "X-Metal-Token"

// Body size limits: generous for a machine with hundreds of disks and
// NICs, small enough that a hostile client cannot make metal buffer much.
const (
	MaxFactsBytes  = 1 << 20
	MaxStatusBytes = 64 << 10
)

// TaskResponse is the answer to GET task.
type TaskResponse struct {
	// Task is the job to do; nil means none yet: ask again later.
	Task *Task `json:"task"`
	// PollSeconds is how long the agent waits before asking again when
	// it has nothing to do.
	PollSeconds int `json:"poll_seconds"`
}

// Status is one agent report about a task.
type Status struct {
	TaskID string `json:"task_id"`
	Phase  Phase  `json:"phase"`
	Step   string `json:"step,omitempty"`
	Done   uint64 `json:"done,omitempty"`
	Total  uint64 `json:"total,omitempty"`
	Error  string `json:"error,omitempty"`
	// Erase is the record of one disk a wipe task erased; the server
	// keeps it as an event, which outlives the machine's record.
	Erase *EraseRecord `json:"erase,omitempty"`
}

// Validate checks a report before it is stored.
func (s Status) Validate() error {
	switch {
	case s.TaskID == "" || len(s.TaskID) > 128:
		return fmt.Errorf("task_id: want 1-128 bytes, got %d", len(s.TaskID))
	case s.Phase != PhaseRunning && s.Phase != PhaseDone && s.Phase != PhaseFailed:
		return fmt.Errorf("phase %q: want running, done or failed", s.Phase)
	case len(s.Step) > 64:
		return fmt.Errorf("step: at most 64 bytes, got %d", len(s.Step))
	case len(s.Error) > 4096:
		return fmt.Errorf("error: at most 4096 bytes, got %d", len(s.Error))
	case s.Phase == PhaseFailed && s.Error == "":
		return fmt.Errorf("a failed report must say why (error is empty)")
	case s.Total > 0 && s.Done > s.Total:
		return fmt.Errorf("done %d exceeds total %d", s.Done, s.Total)
	}
	if e := s.Erase; e != nil {
		if !e.Method.Valid() || len(e.Mechanism) > 64 {
			return fmt.Errorf("erase: method %q, mechanism of %d bytes", e.Method, len(e.Mechanism))
		}
		if err := checkText(map[string]string{"erase.disk": e.Disk, "erase.serial": e.Serial, "erase.mechanism": e.Mechanism, "erase.note": e.Note}); err != nil {
			return err
		}
	}
	return checkText(map[string]string{"task_id": s.TaskID, "step": s.Step, "error": s.Error})
}

// Validate bounds a facts report: counts, and the length and encoding of
// every string, since all of it is shown to operators.
func (hw Hardware) Validate() error {
	if len(hw.Disks) > 1024 || len(hw.NICs) > 1024 || len(hw.Extra) > 256 {
		return fmt.Errorf("too many disks (%d), NICs (%d) or extra facts (%d): at most 1024, 1024 and 256",
			len(hw.Disks), len(hw.NICs), len(hw.Extra))
	}
	fields := map[string]string{
		"cpu.model": hw.CPU.Model, "dmi.vendor": hw.DMI.Vendor, "dmi.product": hw.DMI.Product,
		"dmi.serial": hw.DMI.Serial, "dmi.uuid": hw.DMI.UUID, "dmi.bios_version": hw.DMI.BIOSVersion,
	}
	for i, d := range hw.Disks {
		if d.Name == "" {
			return fmt.Errorf("disks[%d]: name is empty", i)
		}
		fields[fmt.Sprintf("disks[%d].name", i)] = d.Name
		fields[fmt.Sprintf("disks[%d].model", i)] = d.Model
		fields[fmt.Sprintf("disks[%d].serial", i)] = d.Serial
	}
	for i, n := range hw.NICs {
		if n.Name == "" {
			return fmt.Errorf("nics[%d]: name is empty", i)
		}
		if n.MAC != "" {
			if _, err := net.ParseMAC(n.MAC); err != nil {
				return fmt.Errorf("nics[%d].mac %q: not a MAC address", i, n.MAC)
			}
		}
		fields[fmt.Sprintf("nics[%d].name", i)] = n.Name
		fields[fmt.Sprintf("nics[%d].driver", i)] = n.Driver
	}
	for k, v := range hw.Extra {
		fields["extra key "+k] = k
		fields["extra."+k] = v
	}
	if hw.CPU.Sockets < 0 || hw.CPU.Cores < 0 || hw.CPU.Threads < 0 {
		return fmt.Errorf("cpu counts must not be negative")
	}
	return checkText(fields)
}

func checkText(fields map[string]string) error {
	for name, v := range fields {
		if len(v) > 4096 {
			return fmt.Errorf("%s: at most 4096 bytes, got %d", name, len(v))
		}
		if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			return fmt.Errorf("%s: not valid UTF-8 text", name)
		}
	}
	return nil
}

// ReadyPath is the path of a machine's phone-home with secret, under the
// server's base URL.
func ReadyPath(mac, secret string) string {
	return Prefix + "v1/" + mac + "/ready/" + secret
}
