package virtual

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseQEMUSpec(t *testing.T) {
	tests := map[string]struct {
		in   string
		want QEMUSpec
		err  bool
	}{
		"full": {
			in: "name=vm-01,qmp=/tmp/q.sock,mac=52:54:00:00:01:0A,serial=S1,cdrom=cd0,listen=127.0.0.1:8001,qemu-cmd=qemu-system-x86_64 -m 512 -drive if=ide,index=2,media=cdrom,id=cd0",
			want: QEMUSpec{Name: "vm-01", QMP: "/tmp/q.sock", MACs: []string{"52:54:00:00:01:0a"}, Serial: "S1", CDROM: "cd0", Listen: "127.0.0.1:8001",
				Command: []string{"qemu-system-x86_64", "-m", "512", "-drive", "if=ide,index=2,media=cdrom,id=cd0"}},
		},
		"attach only": {in: "name=a,qmp=/q", want: QEMUSpec{Name: "a", QMP: "/q"}},
		"missing qmp": {in: "name=a", err: true},
		"bad mac":     {in: "name=a,qmp=/q,mac=zz", err: true},
		"unknown key": {in: "name=a,qmp=/q,ram=4G", err: true},
		"empty cmd":   {in: "name=a,qmp=/q,qemu-cmd=", err: true},
		"bad listen":  {in: "name=a,qmp=/q,listen=8001", err: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseQEMUSpec(tc.in)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if !tc.err {
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}
			}
		})
	}
}
