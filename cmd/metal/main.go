// Command metal turns a rack of servers into capacity you own: it reads the
// desired state of a site from HCL, powers machines through their BMCs,
// net-boots them and keeps the site converged.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
