package virtual

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// VolumeDisks is a Machine whose RAID volumes are disks its guest sees.
// The server tells it of every volume it creates, deletes, or finds kept
// from a previous run; a refusal undoes the create or the delete.
type VolumeDisks interface {
	// AttachVolume gives the machine v's disk: at once (hot-plugged) if
	// it runs, and at every start from then on. The disk keeps its data
	// across power cycles and restarts of the BMC, as a volume does.
	AttachVolume(ctx context.Context, v Volume) error
	// DetachVolume takes v's disk away, and its data with it.
	DetachVolume(ctx context.Context, v Volume) error
}

var _ VolumeDisks = (*QEMU)(nil)

// raidController is the QEMU id of the storage controller the volumes'
// disks hang off: a virtio-scsi HBA presenting each volume as one SCSI
// disk, as a RAID controller presents its logical drives. It is there
// only while the machine has a volume, so a machine without RAID keeps
// its hardware as its command line says.
const raidController = "metal-raid"

// volumeNode is the QEMU block node name and device id of v's disk.
func volumeNode(v Volume) string { return "metal-vol" + v.ID }

// volumeSerial is the SCSI serial number the guest reads from v's disk.
func volumeSerial(v Volume) string { return "metal-volume-" + v.ID }

// VolumePath is the file holding v's disk.
func (m *QEMU) VolumePath(v Volume) string {
	return filepath.Join(m.cfg.VolumeDir, m.cfg.Name+"-volume-"+v.ID+".raw")
}

func (m *QEMU) AttachVolume(ctx context.Context, v Volume) error {
	if m.cfg.VolumeDir == "" {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.volumeFile(v); err != nil {
		return err
	}
	m.volumes = slices.DeleteFunc(m.volumes, func(o Volume) bool { return o.ID == v.ID })
	m.volumes = append(m.volumes, v)
	_, alive, err := m.status(ctx)
	if err != nil || !alive {
		return err
	}
	return m.plugVolume(ctx, v)
}

// volumeFile creates v's disk as a sparse file of its capacity; one kept
// from before keeps its data.
func (m *QEMU) volumeFile(v Volume) error {
	if err := os.MkdirAll(m.cfg.VolumeDir, 0o755); err != nil {
		return fmt.Errorf("machine %s: volume %s: %w", m.cfg.Name, v.Name, err)
	}
	f, err := os.OpenFile(m.VolumePath(v), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("machine %s: volume %s: %w", m.cfg.Name, v.Name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err == nil && fi.Size() != v.Bytes {
		err = f.Truncate(v.Bytes)
	}
	if err != nil {
		return fmt.Errorf("machine %s: volume %s: %w", m.cfg.Name, v.Name, err)
	}
	return nil
}

// plugVolume hot-plugs v's disk (and the controller, the first time) into
// the running QEMU. m.mu is held.
func (m *QEMU) plugVolume(ctx context.Context, v Volume) error {
	q, err := dialQMP(ctx, m.cfg.QMPSocket)
	if err != nil {
		return err
	}
	defer q.Close()
	if !m.raidPlugged {
		err := q.execute(ctx, "device_add", map[string]any{"driver": "virtio-scsi-pci", "id": raidController}, nil)
		if err != nil && !isDuplicate(err) {
			return fmt.Errorf("machine %s: add the RAID controller: %w", m.cfg.Name, err)
		}
		m.raidPlugged = true
	}
	node := volumeNode(v)
	err = q.execute(ctx, "blockdev-add", map[string]any{
		"driver": "raw", "node-name": node,
		"file": map[string]any{"driver": "file", "filename": m.VolumePath(v)},
	}, nil)
	if err != nil && !isDuplicate(err) {
		return fmt.Errorf("machine %s: volume %s: %w", m.cfg.Name, v.Name, err)
	}
	err = q.execute(ctx, "device_add", map[string]any{
		"driver": "scsi-hd", "bus": raidController + ".0", "drive": node, "id": node, "serial": volumeSerial(v),
	}, nil)
	if err != nil && !isDuplicate(err) {
		return fmt.Errorf("machine %s: plug volume %s: %w", m.cfg.Name, v.Name, err)
	}
	m.log.Info("volume plugged in", "volume", v.Name, "disk", m.VolumePath(v))
	return nil
}

func (m *QEMU) DetachVolume(ctx context.Context, v Volume) error {
	if m.cfg.VolumeDir == "" {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, alive, err := m.status(ctx)
	if err != nil {
		return err
	}
	if alive {
		if err := m.unplugVolume(ctx, v); err != nil {
			return err
		}
	}
	m.volumes = slices.DeleteFunc(m.volumes, func(o Volume) bool { return o.ID == v.ID })
	if err := os.Remove(m.VolumePath(v)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("machine %s: volume %s: %w", m.cfg.Name, v.Name, err)
	}
	return nil
}

// unplugVolume takes v's disk out of the running QEMU. A SCSI disk leaves
// its bus without the guest's consent, but not within device_del: its
// block node is in use until then. m.mu is held.
func (m *QEMU) unplugVolume(ctx context.Context, v Volume) error {
	q, err := dialQMP(ctx, m.cfg.QMPSocket)
	if err != nil {
		return err
	}
	defer q.Close()
	node := volumeNode(v)
	if err := q.execute(ctx, "device_del", map[string]any{"id": node}, nil); err != nil && !isNotFound(err) {
		return fmt.Errorf("machine %s: unplug volume %s: %w", m.cfg.Name, v.Name, err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		err := q.execute(ctx, "blockdev-del", map[string]any{"node-name": node}, nil)
		if err == nil || isNotFound(err) {
			break
		}
		if !isInUse(err) || time.Now().After(deadline) {
			return fmt.Errorf("machine %s: volume %s: %w", m.cfg.Name, v.Name, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	m.log.Info("volume unplugged", "volume", v.Name)
	return nil
}

// isInUse reports whether QEMU refused to remove a block node that a
// device still holds.
func isInUse(err error) bool {
	var q *qmpError
	return errors.As(err, &q) && strings.Contains(q.Desc, "in use")
}

// volumeArgs are the QEMU options of the machine's volumes at its start.
// m.mu is held.
func (m *QEMU) volumeArgs() []string {
	if len(m.volumes) == 0 {
		return nil
	}
	args := []string{"-device", "virtio-scsi-pci,id=" + raidController}
	for _, v := range m.volumes {
		node := volumeNode(v)
		args = append(args,
			"-blockdev", "driver=raw,node-name="+node+",file.driver=file,file.filename="+m.VolumePath(v),
			"-device", "scsi-hd,bus="+raidController+".0,drive="+node+",id="+node+",serial="+volumeSerial(v))
	}
	return args
}

// isDuplicate reports whether QEMU refused an add because it has the
// thing already (a QEMU the BMC did not start, or a retry).
func isDuplicate(err error) bool {
	var q *qmpError
	return errors.As(err, &q) && (strings.Contains(q.Desc, "Duplicate") || strings.Contains(q.Desc, "already"))
}

// isNotFound reports whether QEMU refused a removal of what it does not have.
func isNotFound(err error) bool {
	var q *qmpError
	return errors.As(err, &q) && (q.Class == "DeviceNotFound" || strings.Contains(q.Desc, "not found") || strings.Contains(q.Desc, "Cannot find"))
}
