package arguments

import (
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TerraformStyle lets long flags be written with one dash, as Terraform
// users type them (-var, -var-file, -check): "-name" and "-name=value"
// become "--name..." when name is a long flag of some command under root.
// Arguments after "--" are left alone.
func TerraformStyle(root *cobra.Command, args []string) []string {
	long := map[string]bool{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.LocalFlags().VisitAll(func(f *pflag.Flag) { long[f.Name] = true })
		c.PersistentFlags().VisitAll(func(f *pflag.Flag) { long[f.Name] = true })
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	out := make([]string, len(args))
	for i, arg := range args {
		out[i] = arg
		if arg == "--" {
			copy(out[i:], args[i:])
			break
		}
		if len(arg) > 2 && arg[0] == '-' && arg[1] != '-' {
			name, _, _ := strings.Cut(arg[1:], "=")
			if len(name) > 1 && long[name] {
				out[i] = "-" + arg
			}
		}
	}
	return out
}
