package agentapi_test

import (
	"strings"
	"testing"

	"github.com/metal-dev/metal/pxe/agentapi"
)

// TestValidate: the protocol's own checks of what an agent sends, before
// any server reads it.
func TestValidate(t *testing.T) {
	tests := map[string]struct {
		msg     interface{ Validate() error }
		wantErr string // "" for valid
	}{
		"running":          {msg: agentapi.Status{TaskID: "t1", Phase: agentapi.PhaseRunning, Step: "writing", Done: 1, Total: 2}},
		"no task":          {msg: agentapi.Status{Phase: agentapi.PhaseDone}, wantErr: "task_id"},
		"unknown phase":    {msg: agentapi.Status{TaskID: "t1", Phase: "paused"}, wantErr: `phase "paused"`},
		"failed, no cause": {msg: agentapi.Status{TaskID: "t1", Phase: agentapi.PhaseFailed}, wantErr: "must say why"},
		"done past total":  {msg: agentapi.Status{TaskID: "t1", Phase: agentapi.PhaseRunning, Done: 3, Total: 2}, wantErr: "exceeds total"},
		"bad wipe method": {msg: agentapi.Status{TaskID: "t1", Phase: agentapi.PhaseRunning,
			Erase: &agentapi.EraseRecord{Disk: "vda", Method: "shred"}}, wantErr: "erase: method"},
		"not UTF-8":      {msg: agentapi.Status{TaskID: "t1", Phase: agentapi.PhaseRunning, Step: "\xff"}, wantErr: "not valid UTF-8"},
		"facts":          {msg: agentapi.Hardware{Disks: []agentapi.Disk{{Name: "vda"}}, NICs: []agentapi.NIC{{Name: "eth0", MAC: "52:54:00:00:00:01"}}}},
		"unnamed disk":   {msg: agentapi.Hardware{Disks: []agentapi.Disk{{Model: "x"}}}, wantErr: "disks[0]: name is empty"},
		"bad NIC MAC":    {msg: agentapi.Hardware{NICs: []agentapi.NIC{{Name: "eth0", MAC: "nope"}}}, wantErr: "not a MAC"},
		"negative cores": {msg: agentapi.Hardware{CPU: agentapi.CPU{Cores: -1}}, wantErr: "negative"},
		"long model":     {msg: agentapi.Hardware{CPU: agentapi.CPU{Model: strings.Repeat("x", 4097)}}, wantErr: "at most 4096 bytes"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.msg.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("err %v, want one with %q", err, tc.wantErr)
			}
		})
	}
}
