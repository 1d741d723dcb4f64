package virtual

import (
	"context"
	"sync"
)

// Sim is a Machine with no VM behind it: its power state and boot override
// live in memory and every start is recorded. Served by the real Server and
// driven through the real bmc client, hundreds of them stand in for a rack
// in the converge engine's tests and benchmarks; OnBoot is where a
// simulated install agent hangs off a start.
type Sim struct {
	name   string
	onBoot func(SimBoot)
	secure *bool

	mu    sync.Mutex
	power Power
	boot  Boot   // pending override; a Once override is spent by a start
	boots []Boot // the override each start used, in order
	fail  error
	// stop ends the running boot's context: power off or a reset.
	stop context.CancelFunc
}

// SimOptions configure a Sim.
type SimOptions struct {
	// Name is the machine's name, passed back in SimBoot.
	Name string
	// Power is the initial state (default off).
	Power Power
	// SecureBoot, when set, makes the machine UEFI with Secure Boot on
	// (true) or off; nil: a machine whose BMC has no SecureBoot resource.
	SecureBoot *bool
	// OnBoot, when set, is called in its own goroutine at every start of
	// the machine (power on, or a reset), with what the start booted.
	OnBoot func(SimBoot)
}

// SimBoot is one start of a simulated machine.
type SimBoot struct {
	Machine string
	// Target is the boot source the start used: "Pxe", "Hdd", "Cd",
	// "BiosSetup", or "None" for the machine's normal order.
	Target string
	// Ctx ends when this boot does: the machine powers off or resets.
	Ctx context.Context
}

// NewSim returns a simulated machine.
func NewSim(opts SimOptions) *Sim {
	p := opts.Power
	if p == "" {
		p = PowerOff
	}
	return &Sim{
		name: opts.Name, onBoot: opts.OnBoot, power: p, secure: opts.SecureBoot,
		boot: Boot{Target: "None", Enabled: "Disabled", Mode: "UEFI"},
	}
}

// SetFailure makes every operation fail with err (nil heals it), as a
// broken BMC would; the Server answers such failures with an error status.
func (s *Sim) SetFailure(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

// Boots returns the boot override each start used, oldest first.
func (s *Sim) Boots() []Boot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Boot(nil), s.boots...)
}

// Power returns the current power state without going through Redfish.
func (s *Sim) Power() Power {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.power
}

func (s *Sim) PowerState(context.Context) (Power, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return "", s.fail
	}
	return s.power, nil
}

func (s *Sim) PowerOn(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	if s.power != PowerOn {
		s.start()
	}
	return nil
}

func (s *Sim) PowerOff(context.Context, bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.halt()
	return nil
}

func (s *Sim) Reset(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.halt()
	s.start()
	return nil
}

func (s *Sim) SetBootDevice(_ context.Context, b Boot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.boot = b
	return nil
}

// BootOverride reports the pending override; the Server shows it, so a
// Once override reads as spent after the start that used it.
func (s *Sim) BootOverride() Boot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.boot
}

// SecureBoot reports SimOptions.SecureBoot.
func (s *Sim) SecureBoot(context.Context) (SecureBoot, bool, error) {
	if err := s.failure(); err != nil || s.secure == nil {
		return SecureBoot{}, false, err
	}
	return SecureBoot{Enable: *s.secure}, true, nil
}

func (s *Sim) InsertMedia(context.Context, string) error { return s.failure() }

func (s *Sim) EjectMedia(context.Context) error { return s.failure() }

func (s *Sim) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fail
}

// start powers the machine on with the pending override. Called with mu held.
func (s *Sim) start() {
	target := "None"
	if s.boot.Enabled == "Once" || s.boot.Enabled == "Continuous" {
		target = s.boot.Target
	}
	s.boots = append(s.boots, s.boot)
	if s.boot.Enabled == "Once" {
		s.boot = Boot{Target: "None", Enabled: "Disabled", Mode: s.boot.Mode}
	}
	s.power = PowerOn
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	if s.onBoot != nil {
		go s.onBoot(SimBoot{Machine: s.name, Target: target, Ctx: ctx})
	}
}

// halt powers the machine off, ending its boot. Called with mu held.
func (s *Sim) halt() {
	s.power = PowerOff
	if s.stop != nil {
		s.stop()
		s.stop = nil
	}
}
