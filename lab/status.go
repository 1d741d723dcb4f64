package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/metal-dev/metal/daemon"
	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/internal/netns"
	"github.com/metal-dev/metal/internal/qemu"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
)

// Status is a look at a running (or half-removed) lab.
type Status struct {
	Dir     string `json:"dir"`
	Netns   string `json:"netns"`
	NetnsUp bool   `json:"netns_up"`
	Site    string `json:"site"`
	HTTPURL string `json:"http_url"`
	// APIURL is the console's, API's and metrics' (inside the namespace).
	APIURL string `json:"api_url"`
	// Accel is the accelerator the VMs run under, and why.
	Accel qemu.Choice  `json:"accel"`
	Procs []ProcStatus `json:"processes"`
	VMs   []VMStatus   `json:"vms"`
	// StoreError says why the machines' state could not be read (the
	// store is held by a running metal apply, or does not exist yet).
	StoreError string `json:"store_error,omitempty"`
}

// ProcStatus is one lab process and whether it still runs.
type ProcStatus struct {
	Proc
	Running bool `json:"running"`
}

// VMStatus is one VM: whether its QEMU runs, the last line on its serial
// console, and what metal's store says about the machine.
type VMStatus struct {
	VM
	Running  bool   `json:"running"`
	PID      int    `json:"pid,omitempty"`
	LastLine string `json:"last_serial_line,omitempty"`
	// State, AgentStep and Power are from metal's store, when readable.
	State     string `json:"state,omitempty"`
	AgentStep string `json:"agent_step,omitempty"`
	Power     string `json:"power,omitempty"`
}

// Status reports on the lab: processes, VMs and each machine's state, from
// the lab's metal serve while it runs, else from its store.
func (st *State) Status(ctx context.Context) Status {
	s := Status{
		Dir: st.Dir, Netns: st.Netns, NetnsUp: netns.Exists(st.Netns), Site: st.Site, HTTPURL: st.HTTPURL(), APIURL: st.APIURL(),
		Accel: st.Accel,
	}
	for _, p := range st.Procs {
		s.Procs = append(s.Procs, ProcStatus{Proc: p, Running: p.Running()})
	}
	machines, err := st.machines(ctx)
	if err != nil {
		s.StoreError = err.Error()
	}
	for _, vm := range st.VMs {
		vs := VMStatus{VM: vm, LastLine: LastLine(vm.Serial)}
		if pid, _ := pidFileProc(vm.PIDFile); pid > 0 {
			vs.Running, vs.PID = true, pid
		}
		if m, ok := machines[vm.Name]; ok {
			vs.State, vs.Power = string(m.State), string(m.Power)
			vs.AgentStep = agentStep(m)
		}
		s.VMs = append(s.VMs, vs)
	}
	return s
}

// StoreURL is the lab's inventory store, as its site file names it.
func (st *State) StoreURL() string {
	return "file://" + filepath.Join(st.Dir, "state", "metal.db")
}

// machines reads the machines' state: from the lab's running metal serve
// over its local API socket, which needs no token; else from the store
// itself. A metal that holds the store and answers no socket (metal apply)
// makes it say so instead of waiting.
func (st *State) machines(ctx context.Context) (map[string]inventory.Machine, error) {
	path := filepath.Join(st.Dir, "state", "metal.db")
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("no store yet at %s", path)
	}
	list, err := st.daemonMachines(ctx, filepath.Join(st.Dir, "state", daemon.LocalSocket))
	if err != nil {
		list, err = st.storeMachines(ctx)
	}
	if err != nil {
		return nil, err
	}
	out := make(map[string]inventory.Machine, len(list))
	for _, m := range list {
		out[m.Name] = m
	}
	return out, nil
}

// daemonMachines asks the metal serve answering on socket for the machines.
func (st *State) daemonMachines(ctx context.Context, socket string) ([]inventory.Machine, error) {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}
	client := &http.Client{Transport: &http.Transport{DialContext: dial}, Timeout: 5 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://metal"+api.Prefix+"machines", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ask metal serve: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metal serve answered %s", resp.Status)
	}
	var l api.MachineList
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		return nil, fmt.Errorf("metal serve's machines: %w", err)
	}
	return l.Machines, nil
}

// storeMachines reads the lab's store, if no metal holds it.
func (st *State) storeMachines(ctx context.Context) ([]inventory.Machine, error) {
	store, err := backend.Open(ctx, st.StoreURL(), backend.Options{LockTimeout: 500 * time.Millisecond})
	if err != nil {
		return nil, fmt.Errorf("store busy (a running metal apply holds it): %w", err)
	}
	defer store.Close()
	list, _, err := store.Machines(ctx)
	return list, err
}

var (
	// Terminal escape sequences firmware and iPXE write to the console.
	escapes = regexp.MustCompile(`\x1b(\[[0-9;?]*[ -/]*[@-~]|[()][A-Za-z0-9]|[@-Z\\-_])`)
	// Other control characters, which would garble a status table.
	controls = regexp.MustCompile(`[\x00-\x08\x0b-\x1f\x7f]`)
)

// LastLine returns the last line of text on a serial log, without escape
// sequences and control characters: what the console showed last.
func LastLine(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const window = 8 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > window {
		_, _ = f.Seek(fi.Size()-window, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	b = escapes.ReplaceAll(b, nil)
	lines := bytes.Split(b, []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		// A carriage return starts the line over: keep what was written
		// last.
		segs := bytes.Split(lines[i], []byte("\r"))
		for j := len(segs) - 1; j >= 0; j-- {
			if s := strings.TrimSpace(string(controls.ReplaceAll(segs[j], nil))); s != "" {
				return s
			}
		}
	}
	return ""
}

// agentStep is the agent's last step while it says where a provision is,
// or where one failed. Once the machine is provisioned (or ready) the step
// is only the past ("rebooting" after a finished install) and would read as
// if the machine were still at it.
func agentStep(m inventory.Machine) string {
	if m.Agent == nil {
		return ""
	}
	switch m.State {
	case inventory.StateProvisioning, inventory.StateDeprovisioning, inventory.StateFailed:
		return m.Agent.Step
	}
	return ""
}
