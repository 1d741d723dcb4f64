// Package netns is what metal's lab, its tests and its test helpers know of
// Linux network namespaces named by iproute2 (/run/netns/NAME): whether one
// exists, which processes live in it, running `ip`, and running Go code
// whose sockets belong to it.
package netns

import (
	"bytes"
	"context"
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

// Dir is where iproute2 mounts named namespaces.
const Dir = "/run/netns"

// IP runs iproute2's ip with args and returns an error carrying its output.
func IP(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Exists reports whether the named namespace is mounted.
func Exists(name string) bool {
	_, err := os.Stat(filepath.Join(Dir, name))
	return err == nil
}

// PIDs lists every process whose network namespace is name.
func PIDs(ctx context.Context, name string) ([]int, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", name).Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns pids %s: %w", name, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// Do runs fn on an OS thread that has entered namespace name, and returns
// fn's error. Sockets fn opens belong to the namespace for their whole
// life, even when later used from other goroutines; goroutines fn starts
// run on other threads, in the caller's namespace.
func Do(name string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open own network namespace: %w", err)
	}
	defer orig.Close()
	target, err := os.Open(filepath.Join(Dir, name))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open network namespace %s: %w", name, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace %s: %w", name, err)
	}
	fnErr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Stay locked: the runtime ends a locked thread with its goroutine,
		// so no other goroutine ever runs in the namespace by mistake.
		return errors.Join(fnErr, fmt.Errorf("leave network namespace %s: %w", name, err))
	}
	runtime.UnlockOSThread()
	return fnErr
}

// Dialer returns a DialContext that connects from inside namespace name,
// for clients talking to servers there.
func Dialer(name string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := Do(name, func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}
