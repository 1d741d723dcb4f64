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
		if c, weak := weakPassword(m); weak {
			out = append(out, c)
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
		switch {
		case r.Auth == bmc.AuthBasic && r.AuthReason != "":
			proto += ", HTTP Basic auth: " + r.AuthReason
		case r.Auth == bmc.AuthBasic:
			proto += ", HTTP Basic auth"
		case r.Auth == bmc.AuthSession:
			proto += ", session auth"
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

// weakPassword warns of a BMC password that is too short to be told from
// ordinary text, or equal to the username: metal then redacts it only
// where credentials are written (URLs, headers, request bodies, command
// lines), not in the free text of messages.
func weakPassword(m *site.Machine) (Check, bool) {
	pw := m.BMC.Password
	c := Check{Kind: KindBMC, Subject: "BMC password of " + m.Name, Status: Warn,
		Fix: "give the BMC a longer password of its own"}
	switch {
	case pw == "":
		return c, false
	case pw == m.BMC.Username:
		c.Detail = "the password is the username: anyone who reads a log line naming the user knows it"
	case len(pw) < bmc.MinLiteralSecret:
		c.Detail = fmt.Sprintf("the password is only %d character(s): metal redacts it where credentials are written, but it is too short to be redacted from every message", len(pw))
	default:
		return c, false
	}
	return c, true
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
