package console

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/metal-dev/metal/internal/humanize"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

type adoptView struct {
	M   inventory.Machine
	HCL string
}

// adoptHCL writes the machine block that declares a discovered machine:
// what metal knows of it filled in, what it cannot know (the image to
// run, the BMC) to be chosen, with the site's own names where it has
// them. It is meant to be pasted into the site file and edited.
func adoptHCL(m inventory.Machine, s *site.Site) string {
	var b strings.Builder
	if hw := m.Hardware; hw != nil {
		var facts []string
		if p := strings.TrimSpace(hw.DMI.Vendor + " " + hw.DMI.Product); p != "" {
			facts = append(facts, p)
		}
		if hw.DMI.Serial != "" {
			facts = append(facts, "serial "+hw.DMI.Serial)
		}
		if hw.CPU.Cores > 0 {
			facts = append(facts, strconv.Itoa(hw.CPU.Cores)+" cores")
		}
		if hw.MemoryBytes > 0 {
			facts = append(facts, humanize.Bytes(hw.MemoryBytes)+" memory")
		}
		for _, d := range hw.Disks {
			facts = append(facts, "disk "+d.Name+" "+humanize.Bytes(d.SizeBytes))
		}
		if len(facts) > 0 {
			fmt.Fprintf(&b, "# Discovered by metal's agent: %s.\n", strings.Join(facts, ", "))
		}
	}
	fmt.Fprintf(&b, "machine %q {\n", m.Name)
	fmt.Fprintf(&b, "  mac     = %q\n", m.MAC)
	if m.Identity.IP.IsValid() {
		fmt.Fprintf(&b, "  ip      = %q\n", m.Identity.IP.String())
	}
	network, image := "", ""
	if s != nil {
		if m.Identity.Network != "" {
			network = m.Identity.Network
		} else if len(s.Networks) > 0 {
			network = s.Networks[0].Name
		}
		if len(s.Images) > 0 {
			image = s.Images[0].Name
		}
	}
	if network != "" {
		fmt.Fprintf(&b, "  network = %q\n", network)
	}
	if image != "" {
		fmt.Fprintf(&b, "  image   = image.%s # the image it should run\n", image)
	} else {
		b.WriteString("  # image = image.NAME: the image it should run\n")
	}
	b.WriteString("  power   = \"on\"\n")
	b.WriteString("  # labels = { rack = \"r01\", slot = \"12\" }\n")
	b.WriteString("  # bmc {\n  #   protocol = \"redfish\" # or \"ipmi\"\n  #   address  = \"https://BMC-ADDRESS\"\n  #   username = \"admin\"\n  #   password = var.bmc_password\n  # }\n")
	b.WriteString("}\n")
	return b.String()
}

func (c *console) site() *site.Site {
	if c.opts.Site == nil {
		return nil
	}
	return c.opts.Site()
}

// adoptPage shows the HCL block that brings a discovered machine into
// the site.
func (c *console) adoptPage(w http.ResponseWriter, r *http.Request) {
	m, err := c.opts.Store.Machine(r.Context(), r.PathValue("name"))
	if err != nil {
		c.storeFail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "adopt.html", "Adopt "+m.Name, "plan", adoptView{M: m, HCL: adoptHCL(m, c.site())})
}
