// Command metal turns a rack of servers into capacity you own: it reads the
// desired state of a site from HCL, powers machines through their BMCs,
// net-boots them and keeps the site converged.
package main

import (
	"os"
	"path/filepath"
)

func main() {
	// In the agent's initramfs the kernel starts this binary as /init:
	// it is then the install agent, with no command line to parse.
	if os.Getpid() == 1 && filepath.Base(os.Args[0]) == "init" {
		runInit()
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
