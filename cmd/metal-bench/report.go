package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// host describes the machine a run measured, for the markdown report: a
// ratio means little without what it ran on.
type host struct {
	Machine string // DMI vendor and product, else the host name
	CPU     string // model name and how many this process may use
	Memory  string
	Kernel  string
	OS      string
	Date    time.Time
}

func thisHost(now time.Time) host {
	h := host{Date: now.UTC(), CPU: firstValue("/proc/cpuinfo", "model name"), OS: osRelease()}
	vendor, product := readTrim("/sys/class/dmi/id/sys_vendor"), readTrim("/sys/class/dmi/id/product_name")
	h.Machine = strings.TrimSpace(vendor + " " + product)
	if name, err := os.Hostname(); h.Machine == "" && err == nil {
		h.Machine = name
	}
	h.CPU = strings.TrimSpace(fmt.Sprintf("%d × %s", runtime.NumCPU(), h.CPU))
	if kb, err := strconv.ParseFloat(strings.TrimSuffix(firstValue("/proc/meminfo", "MemTotal"), " kB"), 64); err == nil {
		h.Memory = fmt.Sprintf("%.1f GiB", kb/(1<<20))
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		h.Kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
	}
	return h
}

func readTrim(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

// firstValue is the value of the first "key: value" line of a /proc file
// whose key (trimmed) is key.
func firstValue(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func osRelease() string {
	for _, line := range strings.Split(readTrim("/etc/os-release"), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// writeMarkdown writes the run as a markdown report: the machine, then one
// table row per result, medians only (the JSON beside it has min and max).
func writeMarkdown(w io.Writer, h host, runs int, results []Result) {
	fmt.Fprintf(w, "Run of %s UTC, %d runs of each measure, medians.\n\n", h.Date.Format("2 Jan 2006 15:04"), runs)
	fmt.Fprintln(w, "| machine | CPU | memory | kernel | OS |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n\n", mdCell(h.Machine), mdCell(h.CPU), mdCell(h.Memory), mdCell(h.Kernel), mdCell(h.OS))
	fmt.Fprintln(w, "| measure | metal | peer | ratio | % of limit | target | met |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for _, r := range results {
		if r.Metal.Runs == 0 {
			fmt.Fprintf(w, "| %s | %s | | | | | |\n", mdCell(r.Measure), mdCell(r.Note))
			continue
		}
		peer, ratio := "—", ""
		if r.PeerVal != nil {
			peer = r.Peer + " " + num(r.PeerVal.Median)
			ratio = fmt.Sprintf("%.2f×", r.Ratio)
		}
		limit := r.pctOfLimit()
		if r.Limit != nil {
			limit += " of " + r.Limit.What + " " + num(r.Limit.Value.Median)
		}
		met := "yes"
		if !r.Met {
			met = "**no**"
		}
		if r.Note != "" {
			met += " (" + r.Note + ")"
		}
		fmt.Fprintf(w, "| %s | %s %s | %s | %s | %s | %s | %s |\n", mdCell(r.Measure), num(r.Metal.Median), mdCell(r.Unit),
			mdCell(peer), ratio, mdCell(limit), mdCell(r.Target), mdCell(met))
	}
}

// mdCell escapes what would end a table cell.
func mdCell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// Markers of the README's generated benchmark table.
const (
	readmeBegin = "<!-- make bench: the last run's table, begin -->"
	readmeEnd   = "<!-- make bench: end -->"
)

var errNoMarkers = errors.New("no benchmark markers")

// replaceBetweenMarkers puts table between the README's markers, in place
// of what was there.
func replaceBetweenMarkers(readme, table []byte) ([]byte, error) {
	i := bytes.Index(readme, []byte(readmeBegin))
	j := bytes.Index(readme, []byte(readmeEnd))
	if i < 0 || j < i {
		return nil, fmt.Errorf("%w (%q ... %q)", errNoMarkers, readmeBegin, readmeEnd)
	}
	var out bytes.Buffer
	out.Write(readme[:i+len(readmeBegin)])
	out.WriteString("\n")
	out.Write(table)
	out.Write(readme[j:])
	return out.Bytes(), nil
}
