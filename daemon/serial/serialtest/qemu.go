package serialtest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/internal/qemu/qemutest"
	"github.com/metal-dev/metal/internal/syncbuf"
	"github.com/metal-dev/metal/internal/testenv"
	"github.com/metal-dev/metal/pxe/pxetest/bootkit"
)

// VM is a QEMU machine whose serial console is served on a unix socket,
// as the lab's VMs' are. It boots a Debian kernel and bootkit's
// EchoInitramfs: it prints Marker, then answers each line typed on its
// console with bootkit.EchoPrefix and the line.
type VM struct {
	// Path is the console socket, Log everything the VM printed.
	Path, Log string
	Marker    string
}

// Received is every line the VM answered: what reached its serial
// input, a line at a time.
func (vm *VM) Received() string {
	b, _ := os.ReadFile(vm.Log)
	var got []string
	for _, l := range strings.Split(string(b), "\n") {
		if i := strings.Index(l, bootkit.EchoPrefix); i >= 0 {
			got = append(got, strings.TrimRight(l[i+len(bootkit.EchoPrefix):], "\r"))
		}
	}
	return strings.Join(got, "\n")
}

// QEMU starts a VM on dir/<machine>.sock, under the accelerator the host
// runs guests with (TCG without KVM). Its socket holds the machine back
// until the first client connects, so that client sees everything from
// the firmware's first byte. The VM is killed when the test ends.
func QEMU(t testing.TB, dir, machine string) *VM {
	t.Helper()
	testenv.Integration(t, "QEMU")
	if err := bootkit.CheckQEMU(bootkit.BIOS); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kernel, err := bootkit.Kernel(ctx, bootkit.CacheDir())
	if err != nil {
		t.Fatal(err)
	}
	vm := &VM{Path: filepath.Join(dir, machine+".sock"), Log: filepath.Join(dir, machine+".log"), Marker: "metal-serial-" + machine + "-up"}
	img, err := bootkit.EchoInitramfs(vm.Marker)
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, machine+".initrd")
	if err := os.WriteFile(initrd, img, 0o644); err != nil {
		t.Fatal(err)
	}
	argv := bootkit.DirectBoot(qemutest.Accel(t), 256, kernel, initrd,
		"socket,id=ser0,path="+vm.Path+",server=on,wait=on,logfile="+vm.Log)
	cmd := exec.Command(argv[0], argv[1:]...)
	out := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	child, err := testenv.StartChild(cmd)
	if err != nil {
		t.Fatal(err)
	}
	exited := child.Done()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // our own child, by its PID
		<-exited
		if t.Failed() {
			log, _ := os.ReadFile(vm.Log)
			t.Logf("qemu %s said: %s\nits serial console:\n%s", machine, out.String(), tailBytes(log, 4<<10))
		}
	})
	// QEMU listens before it waits for the first client.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(vm.Path); err == nil {
			break
		}
		select {
		case <-exited:
			t.Fatalf("qemu exited: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu made no console socket in a minute: %s", out.String())
		}
	}
	return vm
}

func tailBytes(b []byte, n int) []byte {
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return b
}
