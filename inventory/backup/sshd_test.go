package backup_test

import (
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/metal-dev/metal/inventory/backup"
	"github.com/metal-dev/metal/inventory/backup/sshdtest"
)

// sshd adapts sshdtest's real OpenSSH server to these tests.
type sshd struct {
	*sshdtest.Server
	hostPub ssh.PublicKey
}

func writeKey(t *testing.T, path string) ssh.PublicKey { return sshdtest.WriteKey(t, path) }

func startSSHD(t *testing.T) *sshd {
	t.Helper()
	s := sshdtest.Start(t)
	return &sshd{Server: s, hostPub: s.HostKey}
}

func (s *sshd) trust(key ssh.PublicKey) { s.Trust(key) }

func (s *sshd) target() backup.Target {
	return backup.Target{User: s.User(), Host: "127.0.0.1", Port: s.Port, Dir: filepath.Join(s.Dir, "snapshots")}
}

func (s *sshd) opts() backup.SSHOptions {
	return backup.SSHOptions{KnownHosts: s.KnownHosts, KeyFiles: []string{s.ClientKey}, AgentSocket: "none", Timeout: 5 * time.Second}
}
