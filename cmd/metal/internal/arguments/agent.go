package arguments

import (
	"github.com/spf13/pflag"

	"github.com/metal-dev/metal/daemon"
)

// AgentBoot names an install agent to boot instead of the one metal
// builds (serve and apply).
type AgentBoot struct {
	Kernel  string
	Initrds []string
	Cmdline string
}

func (f *AgentBoot) Register(fs *pflag.FlagSet) {
	fs.StringVar(&f.Kernel, "agent-kernel", "", "kernel of the install agent, a path on metal's HTTP server or a URL (default: the agent metal builds)")
	fs.StringArrayVar(&f.Initrds, "agent-initrd", nil, "initrd of the install agent (repeatable; with --agent-kernel)")
	fs.StringVar(&f.Cmdline, "agent-cmdline", "", "kernel command line of the install agent (with --agent-kernel)")
}

// Boot is the agent given, or nil to build one.
func (f *AgentBoot) Boot() *daemon.AgentBoot {
	if f.Kernel == "" {
		return nil
	}
	return &daemon.AgentBoot{Kernel: f.Kernel, Initrds: f.Initrds, Cmdline: f.Cmdline}
}

// Servers are the netboot servers' addresses and state directory, for a
// verb that runs them (serve, and apply without a metal serve).
func Servers(fs *pflag.FlagSet, opts *daemon.Options) {
	fs.StringVar(&opts.StateDir, "state-dir", "", "directory for leases and staged files (default: beside the site's file:// state)")
	fs.StringVar(&opts.Listen, "listen", "", "HTTP listen address of the netboot server (default: the site's listen setting)")
	fs.StringVar(&opts.TFTPAddr, "tftp-addr", ":69", "TFTP listen address")
}
