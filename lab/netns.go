package lab

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// NetnsName is the network namespace of the lab in dir (an absolute path).
// It is derived from the directory, so two labs never share a namespace and
// a lab left behind by a crash is found from its directory alone.
func NetnsName(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return "metal-lab-" + hex.EncodeToString(sum[:4])
}

// ip runs iproute2's ip with args and returns an error carrying its output.
func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// netnsExists reports whether a named namespace is mounted under /run/netns.
func netnsExists(name string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", name))
	return err == nil
}

// netnsPIDs lists every process whose network namespace is ns.
func netnsPIDs(ctx context.Context, ns string) ([]int, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns pids %s: %w", ns, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// inNetns runs fn on an OS thread that has entered namespace ns. Sockets fn
// opens belong to ns for their whole life: that is how the lab reaches the
// BMCs and metal's HTTP server on the lab bridge without touching the host
// network.
func inNetns(ns string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open own network namespace: %w", err)
	}
	defer orig.Close()
	target, err := os.Open(filepath.Join("/run/netns", ns))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open network namespace %s: %w", ns, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace %s: %w", ns, err)
	}
	fnErr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Stay locked: the runtime ends a locked thread with its goroutine,
		// so no other goroutine ever runs in the lab's namespace by mistake.
		return errors.Join(fnErr, fmt.Errorf("leave network namespace %s: %w", ns, err))
	}
	runtime.UnlockOSThread()
	return fnErr
}

// Dialer returns a DialContext that connects from inside namespace ns, for
// HTTP clients talking to the lab's BMCs and metal's servers.
func Dialer(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNetns(ns, func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}
