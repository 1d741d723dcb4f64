package agent

import (
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// forceRestartAfter bounds a reboot: device shutdown (a RAID controller
// flushing its cache) takes seconds, never a minute.
const forceRestartAfter = time.Minute

// restart is the default Reboot after an install. Once the disk is written
// nothing may keep the machine in the agent: the engine waits for its OS.
// So the NICs go down first (no driver is transmitting while devices shut
// down: a virtio-net queue spinning in transmit under TCG once held the
// only CPU for good), the disks are synced, and reboot(2) shuts devices
// down cleanly. Should that not return within forceRestartAfter, or fail,
// the kernel's emergency restart (sysrq b) resets the machine without
// shutting anything down; the image was fsynced before it was reported.
func restart(log *slog.Logger) error {
	force := time.AfterFunc(forceRestartAfter, func() {
		log.Error("reboot did not finish; forcing it (sysrq b)", "after", forceRestartAfter)
		if err := forceRestart(); err != nil {
			log.Error("forced reboot", "err", err)
		}
	})
	for _, n := range NICs("/") {
		if err := linkDown(n.Name); err != nil {
			log.Warn("link down before reboot", "nic", n.Name, "err", err)
		}
	}
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	// reboot(2) returns only when it failed.
	force.Stop()
	log.Error("reboot failed; forcing it (sysrq b)", "err", err)
	if ferr := forceRestart(); ferr != nil {
		return ferr
	}
	return err
}

// forceRestart resets the machine at once through the kernel's magic SysRq
// trigger, which works whatever kernel.sysrq allows.
func forceRestart() error {
	return os.WriteFile("/proc/sysrq-trigger", []byte("b"), 0)
}
