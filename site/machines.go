package site

import (
	"slices"

	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

var machineSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "for_each"}, {Name: "count"}, {Name: "name"},
		{Name: "mac", Required: true}, {Name: "ip"}, {Name: "ip6"}, {Name: "hostname"}, {Name: "network"}, {Name: "switch_port"},
		{Name: "image"}, {Name: "power"}, {Name: "labels"}, {Name: "disk"},
		{Name: "ssh_authorized_keys"}, {Name: "user_data"}, {Name: "boot_mode"}, {Name: "bios"}, {Name: "boot"}, {Name: "secure_boot"},
		{Name: "interface"}, {Name: "wipe"},
	},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "bmc"}, {Type: "bond", LabelNames: []string{"name"}},
		{Type: "vlan", LabelNames: []string{"name"}}, {Type: "route"},
		{Type: "firmware", LabelNames: []string{"component"}}, {Type: "raid", LabelNames: []string{"name"}},
	},
}

var bmcSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "protocol"}, {Name: "address", Required: true}, {Name: "username"}, {Name: "password"},
	{Name: "insecure_tls"}, {Name: "ca_file"},
}}

// instance is one expansion of a machine block: its name and the each/count
// values its expressions see.
type instance struct {
	name string
	vars map[string]cty.Value
}

func (l *loader) decodeMachines(blocks []*hcl.Block, s *Site) hcl.Diagnostics {
	var diags hcl.Diagnostics
	total := 0
	for _, b := range blocks {
		content, moreDiags := b.Body.Content(machineSchema)
		diags = append(diags, moreDiags...)
		if moreDiags.HasErrors() {
			continue
		}
		insts, moreDiags := l.expand(b, content)
		diags = append(diags, moreDiags...)
		total += len(insts)
		if total > l.opts.Limits.MaxMachines {
			return append(diags, errorAt(b.DefRange, "Too many machines",
				"The site declares more than %d machines (the limit) by this block; check its for_each or count.", l.opts.Limits.MaxMachines))
		}
		var bmcBlock *hcl.Block
		nets, moreDiags := subBlocks(content, netSchemas)
		diags = append(diags, moreDiags...)
		fws, moreDiags := subBlocks(content, map[string]*hcl.BodySchema{"firmware": firmwareSchema})
		diags = append(diags, moreDiags...)
		raids, moreDiags := subBlocks(content, map[string]*hcl.BodySchema{"raid": raidSchema})
		diags = append(diags, moreDiags...)
		for _, bb := range content.Blocks {
			if bb.Type != "bmc" {
				continue
			}
			if bmcBlock != nil {
				diags = append(diags, errorAt(bb.DefRange, "Duplicate bmc block", "A machine has one bmc block."))
				continue
			}
			bmcBlock = bb
		}
		var bmcContent *hcl.BodyContent
		if bmcBlock != nil {
			var moreDiags hcl.Diagnostics
			bmcContent, moreDiags = bmcBlock.Body.Content(bmcSchema)
			diags = append(diags, moreDiags...)
		}
		ranges := map[string]hcl.Range{}
		for name, a := range content.Attributes {
			ranges[name] = a.Expr.Range()
		}
		machines := make([]*Machine, len(insts))
		instDiags := make([]hcl.Diagnostics, len(insts))
		eachInstance(len(insts), func(lo, hi int) {
			// One evaluation context per worker, its instance variables
			// swapped in turn; the parent context is only read.
			ctx := l.ctx.NewChild()
			for i := lo; i < hi; i++ {
				ctx.Variables = insts[i].vars
				e := &evaluator{ctx: ctx}
				m := decodeMachine(e, b, content, insts[i].name, ranges)
				if bmcContent != nil {
					m.BMC = decodeBMC(e, bmcBlock, bmcContent)
					for _, k := range []string{"username", "password"} {
						if m.BMC.sensitive[k] {
							m.markSensitive("bmc." + k)
						}
					}
				}
				decodeNet(e, m, nets)
				decodeFirmware(e, m, fws)
				decodeRAID(e, m, raids)
				machines[i], instDiags[i] = m, e.diags
			}
		})
		for i := range insts {
			diags = append(diags, instDiags[i]...)
		}
		s.Machines = append(s.Machines, machines...)
	}
	return diags
}

// eachInstance calls fn over [0,n) in contiguous ranges, one per CPU when
// there are enough instances to be worth it: a for_each over a rack of
// thousands of machines evaluates each one's expressions (format,
// cidrhost, ...), and that is most of the time a large site takes to load.
// The results keep the instances' order.
func eachInstance(n int, fn func(lo, hi int)) {
	workers := runtime.GOMAXPROCS(0)
	if n < 256 || workers < 2 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	per := (n + workers - 1) / workers
	for lo := 0; lo < n; lo += per {
		hi := min(lo+per, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}

// expand returns the instances of a machine block: one per for_each key,
// count index, or the block itself.
func (l *loader) expand(b *hcl.Block, content *hcl.BodyContent) ([]instance, hcl.Diagnostics) {
	label := b.Labels[0]
	fe, cnt := content.Attributes["for_each"], content.Attributes["count"]
	e := &evaluator{ctx: l.ctx}
	switch {
	case fe != nil && cnt != nil:
		return nil, hcl.Diagnostics{errorAt(cnt.NameRange, "Both for_each and count",
			"A machine block uses for_each or count, not both.")}
	case cnt != nil:
		n, ok := e.integer(cnt, 0, 1<<31)
		if !ok {
			return nil, e.diags
		}
		if n > l.opts.Limits.MaxMachines {
			return nil, hcl.Diagnostics{errorAt(cnt.Expr.Range(), "Too many machines",
				"count is %d; a site may declare at most %d machines.", n, l.opts.Limits.MaxMachines)}
		}
		insts := make([]instance, n)
		for i := range insts {
			insts[i] = instance{
				name: fmt.Sprintf("%s-%d", label, i),
				vars: map[string]cty.Value{"count": cty.ObjectVal(map[string]cty.Value{"index": cty.NumberIntVal(int64(i))})},
			}
		}
		return insts, nil
	case fe != nil:
		v, diags := fe.Expr.Value(l.ctx)
		if diags.HasErrors() {
			return nil, diags
		}
		if v.ContainsMarked() {
			return nil, hcl.Diagnostics{errorAt(fe.Expr.Range(), "Sensitive value cannot be hidden",
				"for_each is computed from a sensitive variable, but metal cannot keep it secret: %s. Use a value that is not sensitive for for_each, and feed secrets to the attributes that can hide them.", cannotHide["for_each"])}
		}
		ty := v.Type()
		if v.IsNull() || !v.IsWhollyKnown() || !(ty.IsMapType() || ty.IsObjectType() || (ty.IsSetType() && ty.ElementType() == cty.String)) {
			return nil, hcl.Diagnostics{errorAt(fe.Expr.Range(), "Invalid for_each argument",
				"for_each must be a map, an object, or a set of strings; got %s. To repeat a block N times, use count = N, or toset([...]) for a list of names.", describeType(v))}
		}
		if v.LengthInt() > l.opts.Limits.MaxMachines {
			return nil, hcl.Diagnostics{errorAt(fe.Expr.Range(), "Too many machines",
				"for_each has %d elements; a site may declare at most %d machines.", v.LengthInt(), l.opts.Limits.MaxMachines)}
		}
		var insts []instance
		for it := v.ElementIterator(); it.Next(); {
			k, ev := it.Element()
			if ty.IsSetType() {
				k = ev
			}
			if k.IsNull() {
				return nil, hcl.Diagnostics{errorAt(fe.Expr.Range(), "Invalid for_each argument", "for_each keys must not be null.")}
			}
			insts = append(insts, instance{
				name: k.AsString(),
				vars: map[string]cty.Value{"each": cty.ObjectVal(map[string]cty.Value{"key": k, "value": ev})},
			})
		}
		return insts, nil
	}
	return []instance{{name: label}}, nil
}

func decodeMachine(e *evaluator, b *hcl.Block, content *hcl.BodyContent, name string, ranges map[string]hcl.Range) *Machine {
	m := &Machine{Name: name, Power: PowerOn, DeclRange: b.DefRange, ranges: ranges}
	attrs := content.Attributes
	if v, _, ok := e.str(attrs["name"]); ok {
		m.Name = v
	}
	if a := attrs["mac"]; a != nil {
		if v, _, ok := e.str(a); ok {
			hw, err := net.ParseMAC(v)
			if err != nil || len(hw) != 6 {
				e.diags = append(e.diags, errorAt(a.Expr.Range(), "Invalid MAC address",
					"Machine %q: %q is not a MAC address such as 52:54:00:12:34:56.", m.Name, v))
			} else {
				m.MAC = hw
			}
		}
	}
	if a := attrs["ip"]; a != nil {
		if v, _, ok := e.str(a); ok {
			addr, err := netip.ParseAddr(v)
			if err != nil || !addr.Is4() {
				e.diags = append(e.diags, errorAt(a.Expr.Range(), "Invalid IP address",
					"Machine %q: %q is not an IPv4 address such as 10.10.0.11.", m.Name, v))
			} else {
				m.IP = addr
			}
		}
	}
	if a := attrs["ip6"]; a != nil {
		if v, _, ok := e.str(a); ok {
			addr, err := netip.ParseAddr(v)
			if err != nil || !addr.Is6() || addr.Is4In6() || addr.Zone() != "" {
				e.diags = append(e.diags, errorAt(a.Expr.Range(), "Invalid IPv6 address",
					"Machine %q: %q is not an IPv6 address such as 2001:db8:0:1::11.", m.Name, v))
			} else {
				m.IP6 = addr
			}
		}
	}
	m.Hostname, _, _ = e.str(attrs["hostname"])
	if m.Hostname == "" {
		m.Hostname = m.Name
	}
	m.Network, _ = e.reference(attrs["network"], "network")
	m.Image, _ = e.reference(attrs["image"], "image")
	if a := attrs["power"]; a != nil {
		if v, _, ok := e.str(a); ok {
			if v != PowerOn && v != PowerOff {
				e.diags = append(e.diags, errorAt(a.Expr.Range(), "Invalid power state", `power must be "on" or "off", got %q.`, v))
			}
			m.Power = v
		}
	}
	m.Boot = BootIPXE
	if a := attrs["boot"]; a != nil {
		if v, _, ok := e.str(a); ok {
			if !slices.Contains(BootPaths, v) {
				e.diags = append(e.diags, errorAt(a.Expr.Range(), "Invalid boot path", `boot must be one of %q, got %q.`, BootPaths, v))
			}
			m.Boot = v
		}
	}
	// secure_boot = true says the machine's firmware has Secure Boot on:
	// its boot path is the signed chain, whatever boot would default to.
	if a := attrs["secure_boot"]; a != nil {
		if on, ok := e.boolean(a); ok {
			m.SecureBoot = &on
			switch b := attrs["boot"]; {
			case on && b != nil && m.Boot != BootSecure:
				e.diags = append(e.diags, errorAt(a.Expr.Range(), "Contradictory boot path",
					`secure_boot = true boots the signed chain (boot = %q), but boot = %q: Secure Boot refuses iPXE. Drop one of the two.`, BootSecure, m.Boot))
			case !on && m.Boot == BootSecure:
				e.diags = append(e.diags, errorAt(a.Expr.Range(), "Contradictory boot path",
					`secure_boot = false, but boot = %q boots the signed chain. Drop one of the two.`, BootSecure))
			case on:
				m.Boot = BootSecure
			}
		}
	}
	if a := attrs["wipe"]; a != nil {
		if v, _, ok := e.str(a); ok {
			if !slices.Contains(WipeMethods, v) {
				e.diags = append(e.diags, errorAt(a.Expr.Range(), "Invalid wipe method", `wipe must be one of %q, got %q.`, WipeMethods, v))
			}
			m.Wipe = v
		}
	}
	var secret map[string]bool
	m.Labels, secret = e.secretStrMap(attrs["labels"])
	for k := range secret {
		m.markSensitive("labels." + k)
	}
	m.Disk, _, _ = e.str(attrs["disk"])
	var sensitive bool
	if m.SSHAuthorizedKeys, sensitive = e.secretStrList(attrs["ssh_authorized_keys"]); sensitive {
		m.markSensitive("ssh_authorized_keys")
	}
	if m.UserData, sensitive = e.secretStr(attrs["user_data"]); sensitive {
		m.markSensitive("user_data")
	}
	m.BootMode, _, _ = e.str(attrs["boot_mode"])
	m.BIOS = e.strMap(attrs["bios"])
	if a := attrs["switch_port"]; a != nil {
		m.SwitchPort = e.switchPort(a, m.Name)
	}
	m.Interface, _, _ = e.str(attrs["interface"])
	return m
}

// switchPort evaluates switch_port = { relay = "ADDRESS", circuit_id = "..." }.
func (e *evaluator) switchPort(a *hcl.Attribute, machine string) *SwitchPort {
	m := e.strMap(a)
	if m == nil {
		return nil
	}
	bad := func(format string, args ...any) *SwitchPort {
		e.diags = append(e.diags, errorAt(a.Expr.Range(), "Invalid switch port", "Machine %q: "+format, append([]any{machine}, args...)...))
		return nil
	}
	for k := range m {
		if k != "relay" && k != "circuit_id" {
			return bad("switch_port takes relay and circuit_id, not %q.", k)
		}
	}
	relay, err := netip.ParseAddr(m["relay"])
	if err != nil || !relay.Is4() {
		return bad("switch_port's relay must be the IPv4 address of a relay in the network's relay_agents, got %q.", m["relay"])
	}
	if m["circuit_id"] == "" || len(m["circuit_id"]) > 255 {
		return bad("switch_port's circuit_id must be the 1-255 byte circuit-id (option 82) the relay sends for the port.")
	}
	return &SwitchPort{Relay: relay, CircuitID: m["circuit_id"]}
}

func decodeBMC(e *evaluator, b *hcl.Block, content *hcl.BodyContent) *BMC {
	c := &BMC{Protocol: ProtocolRedfish, DeclRange: b.DefRange, ranges: map[string]hcl.Range{}}
	attrs := content.Attributes
	for name, a := range attrs {
		c.ranges[name] = a.Expr.Range()
	}
	if a := attrs["protocol"]; a != nil {
		if v, _, ok := e.str(a); ok {
			c.Protocol = v
		}
	}
	c.Address, _, _ = e.str(attrs["address"])
	c.sensitive = map[string]bool{}
	c.Username, c.sensitive["username"] = e.secretStr(attrs["username"])
	c.Password, c.sensitive["password"] = e.secretStr(attrs["password"])
	c.InsecureTLS, _ = e.boolean(attrs["insecure_tls"])
	c.CAFile, _, _ = e.str(attrs["ca_file"])
	return c
}
