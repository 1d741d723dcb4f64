package backup

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"filippo.io/age"
)

// Authentication. The SFTP server only stores: whoever can write its
// directory could otherwise plant a snapshot whose boot intents point the
// fleet at their kernel, a fence that stops the primary, or a heartbeat
// that holds off promotion. With a Key, every snapshot, heartbeat and fence
// file carries an HMAC-SHA256 over its name and content, and a reader
// refuses (and logs) a file whose MAC is missing or wrong.
//
// HMAC with one shared key rather than ed25519 signatures: the primary and
// the standby swap roles (the standby writes fences, and once promoted,
// heartbeats and snapshots), so each must be able to write what the other
// trusts. With signatures each would hold its own private key and trust
// the other's public one: two secrets and a trust list for the same
// guarantee. Either way the key lives on the two metal hosts only, never
// on the SFTP server.
//
// The MAC covers the file's name, so a genuine file cannot be replayed
// under another name (an old fence as the next epoch, a heartbeat as a
// fence, an old snapshot as a newer one). What a key cannot stop is a
// server that withholds or deletes files: that delays a standby, and the
// fence block's BMC power-off is what stops a primary that never sees its
// fence.
//
// Encryption (Options.Encrypt) seals a whole signed snapshot with age to
// the key's X25519 recipient: user_data and every other record are
// unreadable on the server. Heartbeats and fences stay in clear (they
// hold names and times only) but signed.

// ErrForged: a file is unsigned, signed with another key, or its MAC does
// not match its content.
var ErrForged = errors.New("not signed with this site's backup key")

const (
	keyMAC  = "hmac-sha256"
	keyAge  = "age"
	sigLine = "metal-sig " + keyMAC + " "
	// macDomain separates these MACs from any other use of the key.
	macDomain = "metal-backup/1\n"
	ageMagic  = "age-encryption.org/v1\n"
)

// Key authenticates (and optionally seals) what metal writes to a backup
// directory. A nil *Key writes unsigned files and accepts any.
type Key struct {
	mac []byte
	age *age.X25519Identity
}

// GenerateKey makes a new key from the system's random source.
func GenerateKey() (*Key, error) {
	mac := make([]byte, 32)
	if _, err := rand.Read(mac); err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return &Key{mac: mac, age: id}, nil
}

// ID names the key (not secret): the start of a hash of its MAC key, so a
// refusal can say "signed with key X, this host holds Y".
func (k *Key) ID() string {
	sum := sha256.Sum256(append([]byte("metal-backup-key-id\n"), k.mac...))
	return hex.EncodeToString(sum[:4])
}

// Marshal is the key file's content.
func (k *Key) Marshal() []byte {
	return fmt.Appendf(nil, "# metal backup key %s, made %s. It signs snapshots, heartbeats and fences, and\n"+
		"# opens encrypted snapshots: give the same file to the primary and the standby\n"+
		"# (--key), keep it mode 0600, and never store it on the SFTP server.\n"+
		"%s %s\n%s %s\n", k.ID(), time.Now().UTC().Format(time.DateOnly),
		keyMAC, base64.StdEncoding.EncodeToString(k.mac), keyAge, k.age.String())
}

// ParseKey reads a key file's content.
func ParseKey(b []byte) (*Key, error) {
	k := &Key{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		kind, val, _ := strings.Cut(line, " ")
		var err error
		switch kind {
		case keyMAC:
			k.mac, err = base64.StdEncoding.DecodeString(strings.TrimSpace(val))
			if err == nil && len(k.mac) < 32 {
				err = fmt.Errorf("%d bytes, want 32", len(k.mac))
			}
		case keyAge:
			k.age, err = age.ParseX25519Identity(strings.TrimSpace(val))
		default:
			err = fmt.Errorf("unknown entry %q", kind)
		}
		if err != nil {
			return nil, fmt.Errorf("backup key, line %d: %s: %w", i+1, kind, err)
		}
	}
	if k.mac == nil || k.age == nil {
		return nil, fmt.Errorf("backup key: want a %s and an %s line (make one with metal backup keygen)", keyMAC, keyAge)
	}
	return k, nil
}

// LoadKey reads a key file; one that others can read is refused, as ssh
// refuses such private keys.
func LoadKey(path string) (*Key, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("backup key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("backup key %s: mode %v lets others read it: chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("backup key: %w", err)
	}
	k, err := ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// WriteKeyFile writes a new key to path (mode 0600), never over an
// existing file: replacing a key in use would orphan every backup.
func WriteKeyFile(path string) (*Key, error) {
	k, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("backup key: %w", err)
	}
	if _, err := f.Write(k.Marshal()); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("backup key: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("backup key: %w", err)
	}
	return k, nil
}

func (k *Key) sum(name string, payload []byte) []byte {
	m := hmac.New(sha256.New, k.mac)
	m.Write([]byte(macDomain + name + "\n"))
	m.Write(payload)
	return m.Sum(nil)
}

// sign returns payload (which ends in a newline) with a last line
// carrying the MAC of name and payload; a nil key returns it unchanged.
func (k *Key) sign(name string, payload []byte) []byte {
	if k == nil {
		return payload
	}
	return fmt.Appendf(bytes.Clone(payload), "%s%s %s\n", sigLine, k.ID(), hex.EncodeToString(k.sum(name, payload)))
}

// verify checks the MAC line of data read as name and returns what it
// covers. A nil key strips a MAC line unchecked: without a key nothing is
// authenticated.
func (k *Key) verify(name string, data []byte) ([]byte, error) {
	payload, line := data, ""
	body := bytes.TrimSuffix(data, []byte("\n"))
	cut := bytes.LastIndexByte(body, '\n') // -1: one line, cut+1 is its start
	if last := string(body[cut+1:]); strings.HasPrefix(last, sigLine) {
		payload, line = data[:cut+1], last
	}
	if k == nil {
		return payload, nil
	}
	if line == "" {
		return nil, fmt.Errorf("%s is unsigned: %w", name, ErrForged)
	}
	id, mac, _ := strings.Cut(strings.TrimPrefix(line, sigLine), " ")
	if id != k.ID() {
		return nil, fmt.Errorf("%s is signed with key %s, this host holds key %s: %w", name, id, k.ID(), ErrForged)
	}
	got, err := hex.DecodeString(mac)
	if err != nil || !hmac.Equal(got, k.sum(name, payload)) {
		return nil, fmt.Errorf("%s: its signature does not match its content (forged or altered): %w", name, ErrForged)
	}
	return payload, nil
}

// seal encrypts data to the key's recipient.
func (k *Key) seal(data []byte) ([]byte, error) {
	if k == nil {
		return nil, errors.New("encrypt: no backup key (--key)")
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, k.age.Recipient())
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	if _, err := w.Write(data); err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	return buf.Bytes(), nil
}

// encrypted reports whether data is an age file.
func encrypted(data []byte) bool { return bytes.HasPrefix(data, []byte(ageMagic)) }

// unseal decrypts an age file.
func (k *Key) unseal(name string, data []byte) ([]byte, error) {
	if k == nil {
		return nil, fmt.Errorf("%s is encrypted: give the site's backup key (--key)", name)
	}
	r, err := age.Decrypt(bytes.NewReader(data), k.age)
	if err != nil {
		return nil, fmt.Errorf("%s: decrypt with key %s: %w", name, k.ID(), err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: decrypt: %w", name, err)
	}
	return out, nil
}

// readSigned downloads name and returns its content, decrypted if sealed
// and checked against r.Key. A refused file is logged here, once for all
// its readers.
func (r *Remote) readSigned(ctx context.Context, name string) ([]byte, error) {
	var buf bytes.Buffer
	if err := r.Get(ctx, name, &buf); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	if encrypted(data) {
		var err error
		if data, err = r.Key.unseal(name, data); err != nil {
			return nil, fmt.Errorf("%s: %w", r.target, err)
		}
	}
	payload, err := r.Key.verify(name, data)
	if err != nil {
		r.log.Error("refused a file of the backup directory", "target", r.target.String(), "file", name, "err", err)
		return nil, fmt.Errorf("%s: %w", r.target, err)
	}
	return payload, nil
}

// writeSigned uploads payload as name, signed with r.Key and, with seal,
// encrypted to it; exclusive as Create.
func (r *Remote) writeSigned(ctx context.Context, name string, payload []byte, seal, exclusive bool) error {
	data := r.Key.sign(name, payload)
	if seal {
		var err error
		if data, err = r.Key.seal(data); err != nil {
			return err
		}
	}
	return r.put(ctx, name, bytes.NewReader(data), exclusive)
}
