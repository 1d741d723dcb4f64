package iso

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Media builds the install agent's boot CD per machine into a directory
// metal's HTTP server serves, for BMCs to fetch.
type Media struct {
	Tools Tools
	// Dir is where the images are written; URL is where Dir is served
	// (http://HOST:PORT/files/media).
	Dir, URL string
	// Kernel and Initrds are the agent's, as files on this host.
	Kernel  string
	Initrds []string
}

var machineNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Build writes machine's CD, booting the agent with cmdline, and returns
// its URL. Each build has a fresh random name: the image carries the
// task's secret, so its URL is not guessable from the machine's name, and
// the machine's earlier images are removed.
func (m Media) Build(ctx context.Context, machine, cmdline string) (string, error) {
	if !machineNameRe.MatchString(machine) {
		return "", fmt.Errorf("iso: machine name %q cannot name a file", machine)
	}
	if err := os.MkdirAll(m.Dir, 0o755); err != nil {
		return "", fmt.Errorf("iso: %w", err)
	}
	var rnd [12]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	name := machine + "-" + hex.EncodeToString(rnd[:]) + ".iso"
	old, _ := filepath.Glob(filepath.Join(m.Dir, machine+"-*.iso"))
	if err := m.Tools.Build(ctx, Spec{Kernel: m.Kernel, Initrds: m.Initrds, Cmdline: cmdline}, filepath.Join(m.Dir, name)); err != nil {
		return "", err
	}
	for _, o := range old {
		// Only this machine's: another's name may start with this one's
		// and a dash, but not be followed by a 24-digit hex and .iso.
		if base := filepath.Base(o); len(base) == len(name) && strings.HasPrefix(base, machine+"-") {
			_ = os.Remove(o)
		}
	}
	return strings.TrimSuffix(m.URL, "/") + "/" + name, nil
}
