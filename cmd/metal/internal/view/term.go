package view

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"
)

// IsTerminal says whether f (standard input or output) is a terminal a
// person reads or answers on.
func IsTerminal(f any) bool {
	file, ok := f.(*os.File)
	return ok && term.IsTerminal(int(file.Fd()))
}

// Color says whether to color what goes to w: on a terminal, unless
// --no-color (off) or $NO_COLOR says not to.
func Color(w io.Writer, off bool) bool {
	return !off && IsTerminal(w) && os.Getenv("NO_COLOR") == ""
}

// Width is the width of w if it is a terminal, else 0 (no limit).
func Width(w io.Writer) int {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil {
			return cols
		}
	}
	return 0
}

// Confirm asks on the terminal whether to do what; only "yes" approves.
func Confirm(in io.Reader, out io.Writer, what string) (bool, error) {
	fmt.Fprintf(out, "\nDo you want to %s?\n  Only 'yes' will be accepted.\n\n  Enter a value: ", what)
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read the answer: %w", err)
	}
	return strings.TrimSpace(line) == "yes", nil
}

// Ask asks question on out and returns the line answered on in, or def
// when the answer is empty.
func Ask(in io.Reader, out io.Writer, question, def string) string {
	if def != "" {
		fmt.Fprintf(out, "%s [%s]: ", question, def)
	} else {
		fmt.Fprintf(out, "%s: ", question)
	}
	line, _ := bufio.NewReader(in).ReadString('\n')
	if line = strings.TrimSpace(line); line != "" {
		return line
	}
	return def
}
