package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/metal-dev/metal/bmc/ipmisim"
)

// ServeSerialLine is the IPMI VM's serial line until ctx ends (`metal lab
// serial-line`, which Up starts inside the lab's namespace): its BMC's
// ipmi_sim connects to the TCP address bmc once, the VM's QEMU to the
// Unix socket machine at each power on. ipmisim.ServeLine says why
// ipmi_sim must not be wired to QEMU's socket itself.
func ServeSerialLine(ctx context.Context, bmc, machine string, log *slog.Logger) error {
	bmcLn, err := net.Listen("tcp", bmc)
	if err != nil {
		return fmt.Errorf("serial line: %w", err)
	}
	// A socket left by a line that was killed.
	if err := os.Remove(machine); err != nil && !errors.Is(err, os.ErrNotExist) {
		bmcLn.Close()
		return fmt.Errorf("serial line: %w", err)
	}
	// Listened on last: the socket's file says the line is ready.
	machineLn, err := net.Listen("unix", machine)
	if err != nil {
		bmcLn.Close()
		return fmt.Errorf("serial line: %w", err)
	}
	log.Info("serial line ready", "bmc", bmc, "machine", machine)
	return ipmisim.ServeLine(ctx, bmcLn, machineLn, log)
}
