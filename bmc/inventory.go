package bmc

import (
	"context"
	"errors"
	"sort"
	"time"

	bmclib "github.com/bmc-toolbox/bmclib/v2"
	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/redfish"
)

// Inventory reads the machine's identity, NIC MACs and power state.
//
// Over Redfish it reads the ComputerSystem and its EthernetInterfaces with
// gofish, the client bmclib's own Redfish provider is built on: bmclib's
// Inventory only recognises the resource IDs of a handful of vendors
// (Systems/1, System.Embedded.1, ...) and finds MACs only through
// NetworkAdapters, so it returns nothing for most other BMCs. Over IPMI
// bmclib has no inventory; the FRU and the SDR sensors are read with
// ipmitool (ipmiHardware).
func (c *Client) Inventory(ctx context.Context) (Inventory, error) {
	var inv Inventory
	err := c.call(ctx, "inventory", true, func(ctx context.Context, bc *bmclib.Client, protocol string) error {
		s, err := bc.GetPowerState(ctx)
		if err != nil {
			return err
		}
		inv = Inventory{Power: parsePower(s)}
		if protocol != ProtocolRedfish {
			c.ipmiHardware(ctx, &inv)
			return nil
		}
		return c.redfishInventory(ctx, &inv)
	})
	return inv, err
}

func (c *Client) redfishInventory(ctx context.Context, inv *Inventory) error {
	api, sys, err := c.redfishSystem(ctx)
	if err != nil {
		return err
	}
	defer api.Logout()
	inv.Manufacturer = sys.Manufacturer
	inv.Model = sys.Model
	inv.Serial = sys.SerialNumber
	inv.BIOSVersion = sys.BIOSVersion
	if p := parsePower(string(sys.PowerState)); p != PowerUnknown {
		inv.Power = p
	}
	hw, gaps := redfishHardware(api, sys)
	hw.ReadAt = time.Now().UTC()
	inv.Hardware, inv.Gaps = &hw, gaps
	for _, n := range hw.NICs {
		if n.MAC != "" {
			inv.MACs = append(inv.MACs, n.MAC)
		}
	}
	sort.Strings(inv.MACs)
	return nil
}

// redfishSystem connects with gofish and finds the configured
// ComputerSystem (the first, when none is configured). The caller logs
// out of the returned client.
func (c *Client) redfishSystem(ctx context.Context) (*gofish.APIClient, *redfish.ComputerSystem, error) {
	api, err := gofish.ConnectContext(ctx, gofish.ClientConfig{
		Endpoint:   c.redfish.scheme + "://" + c.redfish.hostPort(),
		Username:   c.cfg.Username,
		Password:   c.cfg.Password.reveal(),
		HTTPClient: c.http,
		BasicAuth:  c.Auth() == AuthBasic,
		DumpWriter: c.dumpWriter(),
	})
	if err != nil {
		return nil, nil, err
	}
	systems, err := api.Service.Systems()
	if err != nil {
		api.Logout()
		return nil, nil, err
	}
	for _, s := range systems {
		if c.cfg.System == "" || s.Name == c.cfg.System || s.ID == c.cfg.System {
			return api, s, nil
		}
	}
	api.Logout()
	return nil, nil, errors.New("no Redfish ComputerSystem named " + c.cfg.System)
}
