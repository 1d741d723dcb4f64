package console

import (
	"strconv"
	"strings"

	"github.com/metal-dev/metal/converge/plan"
)

// planSymbol is the mark `metal plan` prints before a machine or an
// attribute, so the page reads like the terminal.
func planSymbol(a plan.Action) string {
	switch a {
	case plan.Create:
		return "+"
	case plan.Update:
		return "~"
	case plan.Replace:
		return "-/+"
	case plan.Delete:
		return "-"
	}
	return ""
}

// planValue shows a value as the CLI does: sensitive ones hidden,
// placeholders bare, the rest quoted.
func planValue(v *plan.Value) string {
	switch {
	case v == nil:
		return ""
	case v.Sensitive:
		return "(sensitive)"
	case strings.HasPrefix(v.Text, "("):
		return v.Text
	}
	return strconv.Quote(v.Text)
}
