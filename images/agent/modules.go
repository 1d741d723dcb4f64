package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// ParseModulesDep reads depmod's modules.dep format: "path: dep1 dep2",
// paths relative to the modules directory.
func ParseModulesDep(r io.Reader) (map[string][]string, error) {
	deps := map[string][]string{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		mod, rest, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(mod) == "" {
			return nil, fmt.Errorf("modules.dep line %d: want \"module: deps\"", n)
		}
		deps[strings.TrimSpace(mod)] = strings.Fields(rest)
	}
	return deps, sc.Err()
}

// LoadOrder returns every module of deps with each one's dependencies
// before it, in a stable order (modules sorted by path, dependencies
// depth-first). A dependency missing from deps is still listed, so loading
// it fails with its own error; a cycle is an error.
func LoadOrder(deps map[string][]string) ([]string, error) {
	names := make([]string, 0, len(deps))
	for m := range deps {
		names = append(names, m)
	}
	sort.Strings(names)
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var order []string
	var visit func(m string, path []string) error
	visit = func(m string, path []string) error {
		switch state[m] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(path, m), " → "))
		}
		state[m] = visiting
		for _, d := range deps[m] {
			if err := visit(d, append(path, m)); err != nil {
				return err
			}
		}
		state[m] = done
		order = append(order, m)
		return nil
	}
	for _, m := range names {
		if err := visit(m, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// LoadModules loads every module listed in dir's modules.dep, dependencies
// first, with finit_module. A module already loaded (or built in) is fine;
// one that fails (no such hardware) is logged and the rest still load.
// It returns how many loaded.
func LoadModules(dir string, log *slog.Logger) (int, error) {
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return 0, fmt.Errorf("kernel modules: %w", err)
	}
	deps, err := ParseModulesDep(f)
	f.Close()
	if err != nil {
		return 0, fmt.Errorf("kernel modules: %w", err)
	}
	order, err := LoadOrder(deps)
	if err != nil {
		return 0, fmt.Errorf("kernel modules: %w", err)
	}
	loaded := 0
	for _, m := range order {
		err := loadModule(filepath.Join(dir, m))
		switch {
		case err == nil:
			loaded++
		case errors.Is(err, unix.EEXIST):
		default:
			log.Warn("kernel module not loaded", "module", m, "err", err)
		}
	}
	return loaded, nil
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil {
		// Old kernels without finit_module take the image instead.
		if errors.Is(err, unix.ENOSYS) {
			b, rerr := io.ReadAll(f)
			if rerr != nil {
				return rerr
			}
			return unix.InitModule(b, "")
		}
		return err
	}
	return nil
}
