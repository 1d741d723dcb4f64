package view

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/metal-dev/metal/lab"
)

// LabUp says what `metal lab up` made and what to do next.
func LabUp(w io.Writer, st *lab.State) {
	fmt.Fprintf(w, "Lab up in %s (network namespace %s)\nVMs run under %s: %s\n\n", st.Dir, st.Netns, strings.ToUpper(st.Accel.Accel), st.Accel.Reason)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tFIRMWARE\tBOOT PATH\tMAC\tIP\tBMC\tSERIAL LOG")
	for _, vm := range st.VMs {
		ip := vm.IP
		if ip == "" {
			ip = vm.IP6
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s %s\t%s\n", vm.Name, labFirmware(vm), orDash(vm.BootPath), vm.MAC, ip, vm.Protocol, vm.BMCAddress, vm.Serial)
	}
	tw.Flush()
	dirFlag := ""
	if rel, err := filepath.Rel(mustGetwd(), st.Dir); err != nil || rel != ".metal-lab" {
		dirFlag = " --dir " + st.Dir
	}
	first := "vm-1"
	if len(st.VMs) > 0 {
		first = st.VMs[0].Name
	}
	fmt.Fprintf(w, "\nSite file: %s", st.Site)
	if p, ok := st.Proc("serve"); ok {
		fmt.Fprintf(w, "\nmetal serve: %s (pid %d, log %s)", st.HTTPURL(), p.PID, p.Log)
		fmt.Fprintf(w, "\nconsole, API, metrics: %s inside the lab's namespace (metal lab exec -- curl %s/metrics)", st.APIURL(), st.APIURL())
	}
	fmt.Fprintf(w, `

Next:
  metal lab apply%[1]s            provision every VM
  metal lab status%[1]s           VMs, BMCs, last serial line
  metal lab console%[1]s %[2]s     serial console (Ctrl-] leaves)
  metal lab down%[1]s             remove the lab
`, dirFlag, first)
}

func mustGetwd() string {
	wd, _ := os.Getwd()
	return wd
}

// LabStatus prints the lab's processes and VMs, lines cut to width.
func LabStatus(w io.Writer, s lab.Status, width int) {
	ns := "up"
	if !s.NetnsUp {
		ns = "missing"
	}
	fmt.Fprintf(w, "Lab %s (network namespace %s: %s)\n", s.Dir, s.Netns, ns)
	if s.Accel.Accel != "" {
		fmt.Fprintf(w, "VMs run under %s: %s\n", strings.ToUpper(s.Accel.Accel), s.Accel.Reason)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROCESS\tPID\tRUNNING\tLOG")
	for _, p := range s.Procs {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", p.Name, p.PID, yesNo(p.Running), p.Log)
	}
	tw.Flush()
	fmt.Fprintln(w)
	var table bytes.Buffer
	tw = tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tFIRMWARE\tBOOT PATH\tBMC\tQEMU\tSTATE\tLAST SERIAL LINE")
	for _, vm := range s.VMs {
		qemu := "off"
		if vm.Running {
			qemu = fmt.Sprintf("pid %d", vm.PID)
		}
		state := vm.State
		if state == "" {
			state = "-"
		}
		if vm.AgentStep != "" {
			state += " (" + vm.AgentStep + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s\t%s\t%s\t%s\n", vm.Name, labFirmware(vm.VM), orDash(vm.BootPath), vm.Protocol, vm.BMCAddress, qemu, state, vm.LastLine)
	}
	tw.Flush()
	// The serial line is last and may be long: cut lines to the terminal.
	for _, line := range strings.SplitAfter(table.String(), "\n") {
		if r := []rune(strings.TrimSuffix(line, "\n")); width > 0 && len(r) > width {
			line = string(r[:width-1]) + "…\n"
		}
		io.WriteString(w, line)
	}
	if s.StoreError != "" {
		fmt.Fprintf(w, "\nMachine state: %s\n", s.StoreError)
	}
}

// labFirmware is a lab VM's firmware, with Secure Boot when it is on.
func labFirmware(vm lab.VM) string {
	if vm.SecureBoot {
		return vm.Firmware + "+sb"
	}
	return vm.Firmware
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
