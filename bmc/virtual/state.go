package virtual

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"

	"github.com/metal-dev/metal/internal/atomicfile"
)

// state is what a machine's BMC keeps across its restarts, as a real
// machine keeps its flashed firmware, BIOS settings and its controller's
// RAID layout
// (Options.StateDir, one NAME.json per machine).
type state struct {
	Firmware  map[string]string `json:"firmware"` // component ID -> version
	VolumeSeq int               `json:"volume_seq"`
	Volumes   []Volume          `json:"volumes"`
	// BIOS and BIOSPending are the BIOS settings in effect and those
	// staged for the next reset: a machine's NVRAM keeps them.
	BIOS        map[string]any `json:"bios,omitempty"`
	BIOSPending map[string]any `json:"bios_pending,omitempty"`
}

func (s *Server) stateFile(sys *system) string {
	if s.stateDir == "" {
		return ""
	}
	return filepath.Join(s.stateDir, sys.spec.Name+".json")
}

// saveState writes sys's state; sys.mu is held.
func (s *Server) saveState(sys *system) error {
	path := s.stateFile(sys)
	if path == "" {
		return nil
	}
	st := state{Firmware: map[string]string{}, VolumeSeq: sys.volumeSeq, Volumes: sys.volumes, BIOS: sys.bios, BIOSPending: sys.biosPending}
	for _, fw := range sys.hw.Firmware {
		st.Firmware[fw.ID] = fw.Version
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o644)
}

// loadState reads what a previous run of the BMC kept of sys.
func (s *Server) loadState(sys *system) error {
	path := s.stateFile(sys)
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for i, fw := range sys.hw.Firmware {
		if v, ok := st.Firmware[fw.ID]; ok {
			sys.hw.Firmware[i].Version = v
		}
	}
	sys.volumeSeq, sys.volumes = st.VolumeSeq, st.Volumes
	// Over the defaults: an attribute the BIOS gained since keeps its.
	maps.Copy(sys.bios, st.BIOS)
	sys.biosPending = st.BIOSPending
	return nil
}
