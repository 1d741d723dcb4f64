package daemon

import "context"

// prepareAgent builds the install agent's initramfs into dir and returns
// how machines boot it. Until the agent lands, no agent: machines with disk
// images cannot be installed, and unknown machines are not discovered.
func (d *Daemon) prepareAgent(ctx context.Context, dir string) (AgentBoot, error) {
	d.log.Warn("no install agent in this build: disk images cannot be installed yet")
	return AgentBoot{}, nil
}
