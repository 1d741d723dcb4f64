package console

import (
	"fmt"
	"html/template"
	"sort"
	"strings"
	"time"

	"github.com/metal-dev/metal/internal/humanize"
	"github.com/metal-dev/metal/inventory"
)

// funcs are the helpers templates use to show values for people.
func (c *console) funcs() template.FuncMap {
	return template.FuncMap{
		"ago": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return ago(c.opts.Now().Sub(t))
		},
		"stamp": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format(time.RFC3339)
		},
		"set":   func(t time.Time) bool { return !t.IsZero() },
		"bytes": humanize.Bytes,
		"pct": func(done, total uint64) int {
			if total == 0 {
				return 0
			}
			return int(min(100, done*100/total))
		},
		"labels": func(m map[string]string) string {
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			parts := make([]string, len(keys))
			for i, k := range keys {
				parts[i] = k + "=" + m[k]
			}
			return strings.Join(parts, ", ")
		},
		"join":    strings.Join,
		"running": func(s inventory.RunState) bool { return s == inventory.RunRunning || s == inventory.RunPending },
		"short":   short,
		"sym":     planSymbol,
		"show":    planValue,
	}
}

func ago(d time.Duration) string {
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}
