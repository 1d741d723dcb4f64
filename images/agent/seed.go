package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime/multipart"
	"net/textproto"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/metal-dev/metal/pxe/agentapi"
)

// Where the seed goes, and why there.
//
// cloud-init's NoCloud datasource looks for its seed in three places: a
// filesystem labelled "cidata", the kernel command line, and the directory
// /var/lib/cloud/seed/nocloud/ of the root filesystem. The agent uses the
// third: it needs no new partition in someone else's partition table (which
// a GPT image sized to its content may have no room for) and no filesystem
// writer in the agent. After writing the image it mounts each partition in
// turn, and the first one holding /etc/cloud (the mark of an image with
// cloud-init installed) gets the seed. An image without cloud-init gets
// none, and the agent says so in its report.
const seedDir = "var/lib/cloud/seed/nocloud"

// ErrNoSeedTarget is returned by WriteSeed when no partition of the disk
// holds a cloud-init root filesystem.
var ErrNoSeedTarget = errors.New("no partition with /etc/cloud")

// SeedFiles returns the NoCloud meta-data and user-data for t. meta-data is
// written as JSON, which is YAML too, so no value (a hostname, a key) can
// break its quoting. The instance-id is the task's ID: a reinstall is a new
// instance, so cloud-init runs its first-boot modules again.
func SeedFiles(t agentapi.Task) (metaData, userData []byte, err error) {
	meta := map[string]any{"instance-id": "metal-" + t.ID}
	if t.Hostname != "" {
		meta["local-hostname"] = t.Hostname
	}
	if len(t.SSHAuthorizedKeys) > 0 {
		meta["public-keys"] = t.SSHAuthorizedKeys
	}
	metaData, err = json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	userData = []byte(t.UserData)
	if len(userData) == 0 {
		userData = []byte("#cloud-config\n{}\n")
	}
	return append(metaData, '\n'), userData, nil
}

// VendorData returns the NoCloud vendor-data for t: cloud-init's
// phone_home module posting to metal once the installed OS booted, or nil
// when the task asks for no phone-home. It is vendor-data, not merged into
// the site's user-data, so a user-data of any kind (cloud-config, a shell
// script, a MIME multipart) is written as given; cloud-init runs both.
// Written as JSON under the #cloud-config line: YAML, with no quoting to
// get wrong.
func VendorData(t agentapi.Task) ([]byte, error) {
	if t.PhoneHome == "" {
		return nil, nil
	}
	b, err := json.MarshalIndent(map[string]any{
		"phone_home": map[string]any{
			"url":   t.PhoneHome,
			"post":  []string{"instance_id", "hostname", "fqdn"},
			"tries": 20,
		},
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	cloudConfig := append(append([]byte("#cloud-config\n"), b...), '\n')
	if len(t.PhoneHomeAlso) == 0 {
		return cloudConfig, nil
	}
	// phone_home posts to one URL: the other metal serves are tried by a
	// vendor script (cloud-init's scripts-vendor, which a user-data
	// runcmd does not replace, as it would a vendor-data runcmd).
	var out bytes.Buffer
	mw := multipart.NewWriter(&out)
	fmt.Fprintf(&out, "Content-Type: multipart/mixed; boundary=%q\nMIME-Version: 1.0\n\n", mw.Boundary())
	for _, p := range []struct {
		typ  string
		body []byte
	}{{"text/cloud-config", cloudConfig}, {"text/x-shellscript", phoneHomeScript(append([]string{t.PhoneHome}, t.PhoneHomeAlso...))}} {
		w, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {p.typ}})
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(p.body); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// phoneHomeScript posts the phone-home to the first of urls that takes
// it, in order, round after round for a while (curl, else busybox or GNU
// wget): the metal serve that wrote the install may have died since, and
// any other of the site records the phone-home in the shared store.
func phoneHomeScript(urls []string) []byte {
	quoted := make([]string, len(urls))
	for i, u := range urls {
		quoted[i] = "'" + strings.ReplaceAll(u, "'", `'\''`) + "'"
	}
	return []byte(`#!/bin/sh
post() {
  curl -fsS -m 10 -d "hostname=$(hostname)" "$1" >/dev/null 2>&1 ||
    wget -q -O /dev/null -T 10 --post-data "hostname=$(hostname)" "$1" >/dev/null 2>&1
}
for round in 1 2 3 4 5 6 7 8 9 10; do
  for u in ` + strings.Join(quoted, " ") + `; do post "$u" && exit 0; done
  sleep 3
done
echo "metal phone-home: no metal serve answered" >&2
exit 1
`)
}

// NetworkConfig returns the NoCloud network-config of t (version 2,
// rendered from the site: see site.Machine.NetworkConfig), or nil when the
// installed OS takes its address by DHCP. It is JSON, which is YAML too.
func NetworkConfig(t agentapi.Task) []byte {
	if t.NetworkConfig == "" {
		return nil
	}
	return []byte(t.NetworkConfig + "\n")
}

// WriteToRoot writes the seed under a mounted root filesystem.
func WriteToRoot(root string, t agentapi.Task) error {
	meta, user, err := SeedFiles(t)
	if err != nil {
		return err
	}
	vendor, err := VendorData(t)
	if err != nil {
		return err
	}
	dir := filepath.Join(root, seedDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if vendor != nil {
		// Holds the phone-home secret: root only.
		if err := os.WriteFile(filepath.Join(dir, "vendor-data"), vendor, 0o600); err != nil {
			return err
		}
	}
	if net := NetworkConfig(t); net != nil {
		if err := os.WriteFile(filepath.Join(dir, "network-config"), net, 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "meta-data"), meta, 0o644); err != nil {
		return err
	}
	// user-data may hold secrets: readable by root only.
	return os.WriteFile(filepath.Join(dir, "user-data"), user, 0o600)
}

// partitions lists the kernel's partitions of disk (its /sys/block
// subdirectories that have a "partition" file), waiting up to wait for the
// kernel to read a new partition table.
func partitions(sysRoot, disk string, wait time.Duration) []string {
	name := filepath.Base(disk)
	deadline := time.Now().Add(wait)
	for {
		var parts []string
		entries, _ := os.ReadDir(filepath.Join(sysRoot, "sys/block", name))
		for _, e := range entries {
			if _, err := os.Stat(filepath.Join(sysRoot, "sys/block", name, e.Name(), "partition")); err == nil {
				parts = append(parts, e.Name())
			}
		}
		if len(parts) > 0 || time.Now().After(deadline) {
			sort.Strings(parts)
			return parts
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// filesystems returns the disk filesystems the running kernel knows (from
// /proc/filesystems), in the order the seed tries them.
func filesystems() []string {
	b, _ := os.ReadFile("/proc/filesystems")
	known := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 1 {
			known[f[0]] = true
		}
	}
	var out []string
	for _, fs := range []string{"ext4", "xfs", "btrfs", "vfat"} {
		if known[fs] {
			out = append(out, fs)
		}
	}
	return out
}

// WriteSeed writes the task's NoCloud seed into the image just written to
// disk, and returns where it went. ErrNoSeedTarget means the image has no
// cloud-init root; a task that asks for nothing (no hostname, keys or
// user-data) writes nothing.
func WriteSeed(ctx context.Context, disk string, t agentapi.Task, log *slog.Logger) (string, error) {
	if t.Hostname == "" && len(t.SSHAuthorizedKeys) == 0 && t.UserData == "" && t.PhoneHome == "" {
		return "nothing to seed", nil
	}
	mnt := "/run/metal/seed"
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return "", err
	}
	fss := filesystems()
	for _, part := range partitions("/", disk, 5*time.Second) {
		dev := filepath.Join(filepath.Dir(disk), part)
		for _, fs := range fss {
			if err := unix.Mount(dev, mnt, fs, 0, ""); err != nil {
				continue
			}
			fi, err := os.Stat(filepath.Join(mnt, "etc/cloud"))
			var werr error
			if err == nil && fi.IsDir() {
				werr = WriteToRoot(mnt, t)
			}
			if uerr := unix.Unmount(mnt, 0); uerr != nil {
				log.Warn("unmount seed target", "dev", dev, "err", uerr)
			}
			if err != nil || !fi.IsDir() {
				break // mounted, but not a cloud-init root
			}
			if werr != nil {
				return "", fmt.Errorf("%s: %w", dev, werr)
			}
			return dev + ":/" + seedDir, nil
		}
	}
	return "", fmt.Errorf("%s: %w (the image has no cloud-init, or its filesystem is not one of %v)", disk, ErrNoSeedTarget, fss)
}
