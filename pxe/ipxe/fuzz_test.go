package ipxe

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/metal-dev/metal/pxe"
)

// command is one command as iPXE executes it: its tokens before setting
// expansion, and whether any token would be expanded.
type command struct {
	argv   []string
	expand bool
}

// lexIPXE reads a script the way iPXE does (src/image/script.c for lines,
// src/core/exec.c for tokens, separators and comments) and returns the
// commands of each line. A line continued with a trailing backslash is an
// error here: metal never writes one, so one in the output is an injection.
func lexIPXE(script string) ([][]command, error) {
	var lines [][]command
	for _, line := range strings.Split(strings.TrimSuffix(script, "\n"), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if strings.HasSuffix(line, `\`) {
			return nil, fmt.Errorf("line continuation in %q", line)
		}
		tokens := strings.FieldsFunc(line, isSpace)
		if len(tokens) > 0 && strings.HasPrefix(tokens[0], ":") {
			return nil, fmt.Errorf("label in %q", line)
		}
		var cmds []command
		cur := command{}
		for _, tok := range tokens {
			if tok[0] == '#' {
				break
			}
			if tok == "||" || tok == "&&" || tok == ";" {
				cmds = append(cmds, cur)
				cur = command{}
				continue
			}
			cur.argv = append(cur.argv, tok)
			cur.expand = cur.expand || strings.Contains(tok, "${")
		}
		if len(cur.argv) > 0 || len(cmds) > 0 {
			cmds = append(cmds, cur)
		}
		lines = append(lines, cmds)
	}
	return lines, nil
}

// FuzzRender renders intents built from arbitrary machine data and checks
// the output with iPXE's own reading: exactly the expected command lines,
// one command each, in order, no setting expansion, the kernel arguments
// exactly the command line's words. Seeds: testdata/fuzz/FuzzRender.
func FuzzRender(f *testing.F) {
	f.Add("install", "web-01", "/images/linux", "/images/initrd", "http://h/fw.cpio", "console=ttyS0 quiet")
	f.Add("discover", "x\n#!ipxe\nshell", "http://h/k${x}", "http://h/i i", "/a", "a ; shell")
	f.Add("local", "db ${net0/mac}", "", "", "", "")
	f.Add("none", "", "", "", "", "")
	base, _ := url.Parse("http://192.0.2.1:8080/")
	f.Fuzz(func(t *testing.T, action, name, kernel, initrd1, initrd2, cmdline string) {
		in := pxe.Intent{Action: pxe.Action(action), Kernel: kernel, Cmdline: cmdline}
		for _, i := range []string{initrd1, initrd2} {
			if i != "" {
				in.Initrd = append(in.Initrd, i)
			}
		}
		out, err := Render(in, Params{Name: name, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, BaseURL: base})
		if err != nil {
			return
		}
		if !strings.HasPrefix(string(out), "#!ipxe\n") {
			t.Fatalf("no magic line: %q", out)
		}
		lines, err := lexIPXE(string(out))
		if err != nil {
			t.Fatalf("%v in %q", err, out)
		}
		// What each line must run; "" stands for the comment-only magic.
		var want [][]string
		switch in.Action {
		case pxe.ActionInstall, pxe.ActionDiscover:
			want = append(want, nil, []string{"echo"}, []string{"kernel"})
			for range in.Initrd {
				want = append(want, []string{"initrd"})
			}
			want = append(want, []string{"boot"})
		case pxe.ActionLocal:
			want = [][]string{nil, {"echo"}, {"iseq", "exit"}, {"sanboot", "exit"}}
		case pxe.ActionNone, "":
			want = [][]string{nil, {"echo"}, {"exit"}}
		default:
			t.Fatalf("rendered an unknown action %q: %q", action, out)
		}
		var got [][]string
		for _, cmds := range lines {
			var names []string
			for _, c := range cmds {
				if len(c.argv) > 0 {
					names = append(names, c.argv[0])
				}
			}
			got = append(got, names)
		}
		if !slices.EqualFunc(want, got, slices.Equal) {
			t.Fatalf("commands %q, want %q, script:\n%s", got, want, out)
		}
		for i, cmds := range lines {
			for _, c := range cmds {
				// Only the local script's platform test expands a setting.
				if c.expand && !(in.Action == pxe.ActionLocal && c.argv[0] == "iseq") {
					t.Fatalf("line %d expands a setting: %q", i, c.argv)
				}
			}
		}
		if in.Action != pxe.ActionInstall && in.Action != pxe.ActionDiscover {
			return
		}
		kernelArgs := lines[2][0].argv
		if len(kernelArgs) < 2+len(in.Initrd) {
			t.Fatalf("kernel line %q lacks its initrd= arguments", kernelArgs)
		}
		if args := kernelArgs[2+len(in.Initrd):]; !slices.Equal(args, strings.FieldsFunc(cmdline, isSpace)) {
			t.Fatalf("kernel arguments %q, command line %q", args, cmdline)
		}
		for j := range in.Initrd {
			argv := lines[3+j][0].argv
			if len(argv) != 4 || argv[1] != "--name" || kernelArgs[2+j] != "initrd="+argv[2] {
				t.Fatalf("initrd line %q does not match kernel's %q", argv, kernelArgs)
			}
		}
	})
}
