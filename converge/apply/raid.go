package apply

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/site"
)

// StepRAID builds the machine's RAID layout: delete the volumes that are
// not as declared, create those missing, read back.
const StepRAID Step = "raid"

// RAIDBMC is a BMC that can read and change RAID volumes.
type RAIDBMC interface {
	Storage(ctx context.Context) (bmc.Storage, error)
	CreateVolume(ctx context.Context, v bmc.NewVolume) error
	DeleteVolume(ctx context.Context, uri string) error
}

func (b firmwareBMC) Storage(ctx context.Context) (bmc.Storage, error) {
	rd, ok := b.d.(bmc.RAIDDriver)
	if !ok {
		return bmc.Storage{}, errors.New("this BMC cannot build RAID volumes")
	}
	return rd.Storage(ctx)
}

func (b firmwareBMC) CreateVolume(ctx context.Context, v bmc.NewVolume) error {
	rd, ok := b.d.(bmc.RAIDDriver)
	if !ok {
		return errors.New("this BMC cannot build RAID volumes")
	}
	return rd.CreateVolume(ctx, v)
}

func (b firmwareBMC) DeleteVolume(ctx context.Context, uri string) error {
	rd, ok := b.d.(bmc.RAIDDriver)
	if !ok {
		return errors.New("this BMC cannot build RAID volumes")
	}
	return rd.DeleteVolume(ctx, uri)
}

// observedLayout is a volume of the controller as the plan shows it,
// in the terms of decl (the site's volume of that name, nil for one the
// site does not declare): its drives named as the site names them, its
// size shown when the site gives one.
func observedLayout(v bmc.Volume, decl *site.Volume, st bmc.Storage) string {
	var names []string
	for _, uri := range v.Drives {
		name := uri[strings.LastIndex(uri, "/")+1:]
		for _, d := range st.Drives {
			if d.URI != uri {
				continue
			}
			name = d.ID
			if decl != nil {
				for _, ref := range decl.Drives {
					if strings.EqualFold(ref, d.ID) || strings.EqualFold(ref, d.Name) {
						name = ref
					}
				}
			}
		}
		names = append(names, name)
	}
	var bytes int64
	if decl == nil || decl.Bytes > 0 {
		bytes = v.Bytes
	}
	if decl == nil || len(decl.Drives) == 0 {
		names = nil
	}
	return site.VolumeLayout(v.RAIDType, names, len(v.Drives), bytes)
}

func declaredVolume(m *site.Machine, name string) *site.Volume {
	for i := range m.RAID {
		if strings.EqualFold(m.RAID[i].Name, name) {
			return &m.RAID[i]
		}
	}
	return nil
}

// readRAID reads the controller's volumes into the plan's attributes:
// the declared ones, and those the site does not declare (to delete).
func readRAID(ctx context.Context, m *site.Machine, b BMC, r *hwResult) {
	rb, ok := b.(RAIDBMC)
	if !ok {
		r.findings = append(r.findings, "this BMC cannot report RAID volumes; the plan compares with what metal last applied")
		return
	}
	st, err := rb.Storage(ctx)
	if err != nil {
		r.findings = append(r.findings, fmt.Sprintf("RAID volumes not read: %v", err))
		return
	}
	r.raidRead = true
	for _, v := range st.Volumes {
		decl := declaredVolume(m, v.Name)
		name := v.Name
		if decl != nil {
			name = decl.Name
		}
		r.attrs[plan.RAIDPrefix+name] = plan.Value{Text: observedLayout(v, decl, st)}
	}
	for i := range m.RAID {
		for _, ref := range m.RAID[i].Drives {
			if _, ok := st.Drive(ref); !ok {
				r.findings = append(r.findings, fmt.Sprintf("raid %s: the controller has no drive %s", m.RAID[i].Name, ref))
			}
		}
	}
}

// raid brings the controller to the declared layout. Deleting a volume
// loses its data: it needs AllowDestroy, as the plan said.
func (m *machineRun) raid(ctx context.Context) error {
	if len(m.decl.RAID) == 0 {
		return nil
	}
	rb, ok := m.bmc.(RAIDBMC)
	if m.bmc == nil || !ok {
		return &stepError{StepRAID, errors.New("this machine's BMC cannot build RAID volumes (metal does it over Redfish)")}
	}
	var st bmc.Storage
	read := func() error {
		return m.bmcStep(ctx, StepRAID, "", func(ctx context.Context) error {
			var err error
			st, err = rb.Storage(ctx)
			return err
		})
	}
	if err := read(); err != nil {
		return err
	}
	present := map[string]bool{}
	deleted := false
	for _, v := range st.Volumes {
		decl := declaredVolume(m.decl, v.Name)
		if decl != nil && observedLayout(v, decl, st) == decl.Layout() {
			present[strings.ToLower(decl.Name)] = true
			continue
		}
		if !m.r.opts.AllowDestroy {
			return &stepError{StepRAID, fmt.Errorf("volume %s (%s) is not as declared and would be deleted: %w", v.Name, observedLayout(v, nil, st), ErrDestroyNotAllowed)}
		}
		if err := m.bmcStep(ctx, StepRAID, "delete volume "+v.Name, func(ctx context.Context) error { return rb.DeleteVolume(ctx, v.URI) }); err != nil {
			return err
		}
		m.event(ctx, fmt.Sprintf("raid: deleted volume %s (%s)", v.Name, observedLayout(v, nil, st)))
		deleted = true
	}
	if deleted {
		if err := read(); err != nil {
			return err
		}
	}
	used := map[string]bool{}
	for _, v := range st.Volumes {
		for _, d := range v.Drives {
			used[d] = true
		}
	}
	for i := range m.decl.RAID {
		decl := &m.decl.RAID[i]
		if present[strings.ToLower(decl.Name)] {
			continue
		}
		drives, err := pickDrives(decl, st, used)
		if err != nil {
			return &stepError{StepRAID, fmt.Errorf("raid %s: %w", decl.Name, err)}
		}
		nv := bmc.NewVolume{Name: decl.Name, RAIDType: decl.Level, Bytes: decl.Bytes, Drives: drives}
		// Retrying is safe: CreateVolume skips a volume of that name.
		if err := m.bmcStep(ctx, StepRAID, "create volume "+decl.Name+": "+decl.Layout(), func(ctx context.Context) error { return rb.CreateVolume(ctx, nv) }); err != nil {
			return err
		}
		m.event(ctx, fmt.Sprintf("raid: created volume %s (%s)", decl.Name, decl.Layout()))
	}
	if err := read(); err != nil {
		return err
	}
	for i := range m.decl.RAID {
		decl := &m.decl.RAID[i]
		got := "(absent)"
		for _, v := range st.Volumes {
			if strings.EqualFold(v.Name, decl.Name) {
				got = observedLayout(v, decl, st)
			}
		}
		if got != decl.Layout() {
			return &stepError{StepRAID, fmt.Errorf("after the change the controller reports volume %s as %s, want %s", decl.Name, got, decl.Layout())}
		}
	}
	return nil
}

// pickDrives chooses the drives of a new volume: those the site names,
// or the first unused ones; none may be in another volume.
func pickDrives(decl *site.Volume, st bmc.Storage, used map[string]bool) ([]string, error) {
	var out []string
	if len(decl.Drives) > 0 {
		for _, ref := range decl.Drives {
			d, ok := st.Drive(ref)
			if !ok {
				return nil, fmt.Errorf("the controller has no drive %s", ref)
			}
			if used[d.URI] {
				return nil, fmt.Errorf("drive %s is in another volume", ref)
			}
			used[d.URI] = true
			out = append(out, d.URI)
		}
		return out, nil
	}
	for _, d := range st.Drives {
		if len(out) == decl.Count {
			break
		}
		if !used[d.URI] {
			used[d.URI] = true
			out = append(out, d.URI)
		}
	}
	if len(out) < decl.Count {
		return nil, fmt.Errorf("it needs %d unused drives; the controller has %d", decl.Count, len(out))
	}
	return out, nil
}
