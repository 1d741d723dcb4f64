package view

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestTableFitsWidth(t *testing.T) {
	rows := [][]string{{"NAME", "MAC", "STATE"}, {"a-rather-long-machine-name-in-rack-07", "52:54:00:00:01:01", "ready"}}
	tests := map[string]struct {
		width int
		want  string
	}{
		"no limit":                {0, "NAME                                   MAC                STATE\na-rather-long-machine-name-in-rack-07  52:54:00:00:01:01  ready\n"},
		"narrow":                  {40, "NAME            MAC                STATE\na-rather-long…  52:54:00:00:01:01  ready\n"},
		"too narrow for the rest": {10, "NAME      MAC                STATE\na-rathe…  52:54:00:00:01:01  ready\n"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var b strings.Builder
			Table(&b, rows, tc.width)
			if d := cmp.Diff(tc.want, b.String()); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}
