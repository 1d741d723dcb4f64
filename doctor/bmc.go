package doctor

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/site"
)

// checkBMCs reads the power state of every machine's BMC with its
// credentials, all at once, each bounded by BMCTimeout: a reachable BMC
// that accepts the password is what every later power action needs.
func checkBMCs(ctx context.Context, opts Options) []Check {
	var targets []bmc.Target
	var out []Check
	for _, m := range opts.Site.Machines {
		if m.BMC == nil {
			continue
		}
		d, err := bmc.New(bmcConfig(m, opts), opts.Logger)
		if err != nil {
			out = append(out, Check{Kind: KindBMC, Subject: "BMC of " + m.Name, Status: Fail,
				Detail: err.Error(), Fix: "fix the machine's bmc block"})
			continue
		}
		targets = append(targets, bmc.Target{Name: m.Name, Driver: d})
	}
	results := bmc.RunFleet(ctx, targets, bmc.FleetOptions{Concurrency: opts.Concurrency, MachineTimeout: opts.BMCTimeout}, bmc.OpStatus)
	for _, r := range results {
		c := Check{Kind: KindBMC, Subject: "BMC of " + r.Machine}
		proto := r.Protocol
		if r.Provider != "" {
			proto += " via " + r.Provider
		}
		if r.Err == nil {
			c.Status, c.Detail = OK, fmt.Sprintf("%s answers (%s), power %s", r.Address, proto, r.Power)
		} else {
			c.Status, c.Detail, c.Fix = Fail, bmcDetail(r), bmcFix(r.Err)
		}
		out = append(out, c)
	}
	return out
}

// bmcConfig is the machine's BMC with doctor's short per-call timeout and
// no retries: doctor asks whether the BMC answers now, not eventually.
func bmcConfig(m *site.Machine, opts Options) bmc.Config {
	cfg := apply.BMCConfig(m)
	cfg.Timeout, cfg.Retries = opts.BMCTimeout, 1
	return cfg
}

// bmcDetail is the failure without what the subject and the fix already
// say: the machine's name and the driver's hint.
func bmcDetail(r bmc.Result) string {
	msg := strings.TrimPrefix(r.Error, "machine "+r.Machine+": ")
	var be *bmc.Error
	if errors.As(r.Err, &be) && be.Hint != "" {
		msg = strings.TrimSuffix(msg, " ("+be.Hint+")")
	}
	return msg
}

// bmcFix is what to do about a failed BMC: the driver's own hint when it
// has one (it knows the protocol), else advice by kind of failure.
func bmcFix(err error) string {
	var be *bmc.Error
	if errors.As(err, &be) && be.Hint != "" {
		return be.Hint
	}
	switch {
	case errors.Is(err, bmc.ErrCredentials):
		return "check the BMC username and password (and the variable they come from)"
	case errors.Is(err, context.DeadlineExceeded):
		return "the BMC did not answer in time: is its address right and reachable from this host? (metal doctor --bmc-timeout gives it longer)"
	}
	return "check the machine's bmc block and that the BMC is reachable from this host"
}
