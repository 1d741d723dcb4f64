package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/metal-dev/metal/images"
	"github.com/metal-dev/metal/pxe/agentapi"
)

// Worker carries out tasks on this machine and reports them to metal.
type Worker struct {
	Client *agentapi.Client
	// HTTP fetches images; default http.DefaultClient.
	HTTP *http.Client
	Log  *slog.Logger
	// SysRoot is where /sys is read from ("/"); DevDir where the disks'
	// device nodes are ("/dev"). Tests point them elsewhere.
	SysRoot string
	DevDir  string
	// ProgressEvery is how often bytes written are reported (default 1 s).
	ProgressEvery time.Duration
	// Seed writes the cloud-init seed after an install; default
	// WriteSeed. Tests that write to a plain file replace it.
	Seed func(ctx context.Context, disk string, t agentapi.Task, log *slog.Logger) (string, error)
}

func (w *Worker) defaults() {
	if w.HTTP == nil {
		w.HTTP = http.DefaultClient
	}
	if w.Log == nil {
		w.Log = slog.Default()
	}
	if w.SysRoot == "" {
		w.SysRoot = "/"
	}
	if w.DevDir == "" {
		w.DevDir = "/dev"
	}
	if w.ProgressEvery <= 0 {
		w.ProgressEvery = time.Second
	}
	if w.Seed == nil {
		w.Seed = WriteSeed
	}
}

// Run does task t and reports its end: done, or failed with the cause. The
// report itself is retried for a while, since a machine that installed its
// OS but could not say so would be installed again. It returns the task's
// error, if any.
func (w *Worker) Run(ctx context.Context, t agentapi.Task) error {
	w.defaults()
	var err error
	switch t.Kind {
	case agentapi.TaskInstall:
		err = w.install(ctx, t)
	case agentapi.TaskWipe:
		err = w.wipe(ctx, t)
	case agentapi.TaskDiscover:
		// The facts were reported before the task was asked for.
	default:
		err = fmt.Errorf("unknown task kind %q: this agent knows discover, install and wipe", t.Kind)
	}
	final := agentapi.Status{TaskID: t.ID, Phase: agentapi.PhaseDone}
	if t.Kind == agentapi.TaskInstall {
		final.Step = "rebooting"
	}
	if err != nil {
		final = agentapi.Status{TaskID: t.ID, Phase: agentapi.PhaseFailed, Error: err.Error()}
		if len(final.Error) > 4000 {
			final.Error = final.Error[:4000]
		}
		w.Log.Error("task failed", "task", t.ID, "kind", t.Kind, "err", err)
	} else {
		w.Log.Info("task done", "task", t.ID, "kind", t.Kind)
	}
	w.report(ctx, final, 10)
	return err
}

// report sends st, retrying up to tries times with a growing pause.
func (w *Worker) report(ctx context.Context, st agentapi.Status, tries int) {
	pause := time.Second
	for i := 0; i < tries; i++ {
		err := w.Client.Status(ctx, st)
		if err == nil || errors.Is(err, agentapi.ErrStaleTask) || ctx.Err() != nil {
			return
		}
		w.Log.Warn("status report failed", "task", st.TaskID, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, 15*time.Second)
	}
}

// pickDisk returns the device path of the task's disk, or of the first
// disk (by kernel name) when the task names none.
func (w *Worker) pickDisk(want string) (string, error) {
	disks := Disks(w.SysRoot)
	if want != "" {
		name := strings.TrimPrefix(want, "/dev/")
		for _, d := range disks {
			if d.Name == name {
				return filepath.Join(w.DevDir, name), nil
			}
		}
		var have []string
		for _, d := range disks {
			have = append(have, d.Name)
		}
		return "", fmt.Errorf("disk %s not found (this machine has: %s)", want, strings.Join(have, ", "))
	}
	for _, d := range disks {
		if d.SizeBytes > 0 {
			return filepath.Join(w.DevDir, d.Name), nil
		}
	}
	return "", errors.New("no disk found: is the disk controller's driver in the agent's initramfs?")
}

// progress reports bytes done every ProgressEvery until stop is called.
type progress struct {
	mu          sync.Mutex
	done, total uint64
	step        string
}

func (p *progress) set(step string, done, total uint64) {
	p.mu.Lock()
	p.step, p.done, p.total = step, done, total
	p.mu.Unlock()
}

func (w *Worker) reportProgress(ctx context.Context, taskID string, p *progress) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			if r := recover(); r != nil {
				w.Log.Error("progress reporter panic", "panic", fmt.Sprint(r))
			}
		}()
		tick := time.NewTicker(w.ProgressEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			p.mu.Lock()
			st := agentapi.Status{TaskID: taskID, Phase: agentapi.PhaseRunning, Step: p.step, Done: p.done, Total: p.total}
			p.mu.Unlock()
			if st.Total > 0 && st.Done > st.Total {
				st.Total = 0
			}
			if err := w.Client.Status(ctx, st); err != nil && ctx.Err() == nil {
				w.Log.Warn("progress report failed", "err", err)
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

func (w *Worker) install(ctx context.Context, t agentapi.Task) error {
	if t.ImageURL == "" {
		return errors.New("install task without an image URL")
	}
	if t.Checksum == "" {
		return errors.New("install task without a checksum: metal does not write unverified images")
	}
	disk, err := w.pickDisk(t.Disk)
	if err != nil {
		return err
	}
	src, err := w.resolve(t.ImageURL)
	if err != nil {
		return err
	}
	w.Log.Info("installing", "task", t.ID, "image", t.Image, "url", src, "disk", disk, "format", t.Format)
	w.report(ctx, agentapi.Status{TaskID: t.ID, Phase: agentapi.PhaseRunning, Step: "fetching"}, 3)

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return fmt.Errorf("image %s: %w", src, err)
	}
	resp, err := w.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("fetch image: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch image %s: %s", src, resp.Status)
	}
	var total uint64
	if resp.ContentLength > 0 {
		total = uint64(resp.ContentLength)
	}

	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open disk: %w", err)
	}
	defer f.Close()
	// The step changes now, not at the first tick, so the timeline shows
	// the write starting however fast it goes.
	w.report(ctx, agentapi.Status{TaskID: t.ID, Phase: agentapi.PhaseRunning, Step: "writing", Total: total}, 3)
	p := &progress{step: "writing", total: total}
	stop := w.reportProgress(ctx, t.ID, p)
	n, werr := images.Write(ctx, f, resp.Body, images.WriteOptions{
		Format: t.Format, Checksum: t.Checksum, Total: total,
		Progress: func(done, total uint64) { p.set("writing", done, total) },
	})
	stop()
	if werr == nil {
		werr = f.Sync()
	}
	if werr != nil {
		// A half-written or unverified image must not boot: clear its
		// partition table so the firmware goes on to the network.
		if zerr := zeroRange(f, 0, wipeBytes); zerr != nil {
			w.Log.Warn("clearing the disk after a failed write", "err", zerr)
		}
		f.Sync()
		if errors.Is(werr, images.ErrChecksum) {
			return werr
		}
		return fmt.Errorf("write %s to %s: %w", src, disk, werr)
	}
	w.Log.Info("image written", "disk", disk, "bytes", n)
	rereadPartitions(f, w.Log)
	f.Close()

	w.report(ctx, agentapi.Status{TaskID: t.ID, Phase: agentapi.PhaseRunning, Step: "seeding"}, 3)
	where, err := w.Seed(ctx, disk, t, w.Log)
	switch {
	case errors.Is(err, ErrNoSeedTarget):
		// Not every image runs cloud-init; the timeline says it got none.
		w.Log.Warn("no cloud-init seed written", "err", err)
		w.report(ctx, agentapi.Status{TaskID: t.ID, Phase: agentapi.PhaseRunning, Step: "seed-skipped"}, 3)
	case err != nil:
		return fmt.Errorf("cloud-init seed: %w", err)
	default:
		w.Log.Info("cloud-init seed", "where", where)
	}
	unix.Sync()
	return nil
}

// resolve makes a path on metal's server ("/images/x.raw") absolute.
func (w *Worker) resolve(ref string) (string, error) {
	base, err := url.Parse(w.Client.BaseURL)
	if err != nil {
		return "", fmt.Errorf("metal url: %w", err)
	}
	u, err := base.Parse(ref)
	if err != nil {
		return "", fmt.Errorf("image url %q: %w", ref, err)
	}
	return u.String(), nil
}

// wipeBytes is how much of each end of a disk wipe zeroes: MBR, GPT and
// its backup, and the superblocks of common filesystems and RAID/LVM
// labels all live in the first or last MiB.
const wipeBytes = 1 << 20

func (w *Worker) wipe(ctx context.Context, t agentapi.Task) error {
	disks := Disks(w.SysRoot)
	if t.Disk != "" {
		d, err := w.pickDisk(t.Disk)
		if err != nil {
			return err
		}
		disks = []agentapi.Disk{{Name: filepath.Base(d)}}
		for _, x := range Disks(w.SysRoot) {
			if x.Name == disks[0].Name {
				disks[0] = x
			}
		}
	}
	if len(disks) == 0 {
		return errors.New("no disk found to wipe")
	}
	for i, d := range disks {
		w.report(ctx, agentapi.Status{TaskID: t.ID, Phase: agentapi.PhaseRunning, Step: "wiping",
			Done: uint64(i), Total: uint64(len(disks))}, 3)
		rec, err := EraseDisk(ctx, filepath.Join(w.DevDir, d.Name), t.Wipe, nil)
		rec.Disk, rec.Serial = d.Name, d.Serial
		w.Log.Info("erased", "disk", d.Name, "serial", d.Serial, "method", string(rec.Method), "mechanism", rec.Mechanism,
			"bytes", rec.Bytes, "duration", rec.Duration, "verified", rec.Verified, "verified_bytes", rec.VerifiedBytes, "note", rec.Note)
		// Each disk's erase record is a step of the task's timeline and,
		// through the server, an event that outlives the machine's
		// record; a failed one too, unverified, so the log says what was
		// and was not done.
		w.report(ctx, agentapi.Status{TaskID: t.ID, Phase: agentapi.PhaseRunning,
			Step: eraseStep(rec), Done: uint64(i + 1), Total: uint64(len(disks)), Erase: &rec}, 3)
		if err != nil {
			return fmt.Errorf("wipe %s (%s): %w", d.Name, rec.Method, err)
		}
	}
	unix.Sync()
	return nil
}

// eraseStep is an erase record as a timeline step (at most 64 bytes):
// "erased sda: zero, 64 GiB, verified".
func eraseStep(r agentapi.EraseRecord) string {
	v := "verified"
	if !r.Verified {
		v = "not verified"
	}
	s := fmt.Sprintf("erased %s: %s, %s, %s", r.Disk, r.Method, humanBytes(r.Bytes), v)
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}

func humanBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d B", n)
}

// wipeEnds zeroes the first and last wipeBytes of f: what a quick wipe
// does.
func wipeEnds(f *os.File, size uint64) error {
	if err := zeroRange(f, 0, int64(min(size, wipeBytes))); err != nil {
		return err
	}
	if size > 2*wipeBytes {
		if err := zeroRange(f, int64(size-wipeBytes), wipeBytes); err != nil {
			return err
		}
	}
	return nil
}

func zeroRange(f *os.File, off, n int64) error {
	buf, free, err := alignedBuffer(int(n))
	if err != nil {
		return err
	}
	defer free()
	_, err = f.WriteAt(buf, off)
	return err
}

// rereadPartitions asks the kernel to read the disk's new partition table,
// so the seed can find the image's partitions. A plain file (tests) has
// none to read.
func rereadPartitions(f *os.File, log *slog.Logger) {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeDevice == 0 {
		return
	}
	var rerr error
	for i := 0; i < 10; i++ {
		// EBUSY while udev-less devtmpfs settles is brief; try again.
		if rerr = unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0); rerr == nil || !errors.Is(rerr, unix.EBUSY) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if rerr != nil && log != nil {
		log.Warn("re-reading the partition table", "disk", f.Name(), "err", rerr)
	}
}
