package bmc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// ipmitoolCmd is an ipmitool command against the BMC over IPMI 2.0
// (lanplus), for what bmclib's ipmitool provider does not offer (serial
// over LAN, FRU, SDR). The password goes in the environment, never on
// the command line, where any user's ps would show it.
func (c *Client) ipmitoolCmd(ctx context.Context, args ...string) (*exec.Cmd, error) {
	tool := c.cfg.IPMIToolPath
	if tool == "" {
		p, err := exec.LookPath("ipmitool")
		if err != nil {
			return nil, fmt.Errorf("ipmitool not found (apt-get install ipmitool): %w", err)
		}
		tool = p
	}
	base := []string{"-I", "lanplus", "-H", c.ipmi.host, "-p", c.ipmi.port,
		"-U", c.cfg.Username, "-E", "-C", c.cfg.IPMICipherSuite, "-N", "5"}
	cmd := exec.CommandContext(ctx, tool, append(base, args...)...)
	cmd.Env = []string{"IPMITOOL_PASSWORD=" + c.cfg.Password.reveal()}
	return cmd, nil
}

// ipmitool runs one ipmitool command and returns what it printed. A
// failure carries ipmitool's own words, which classify reads.
func (c *Client) ipmitool(ctx context.Context, args ...string) (string, error) {
	cmd, err := c.ipmitoolCmd(ctx, args...)
	if err != nil {
		return "", err
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		msg := strings.TrimSpace(stderr.String() + "\n" + stdout.String())
		if msg == "" {
			msg = err.Error()
		}
		return stdout.String(), errors.New("ipmitool " + strings.Join(args, " ") + ": " + oneLine(msg))
	}
	return stdout.String(), nil
}
