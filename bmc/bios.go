package bmc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/redfish"
)

// BIOSDriver is a Driver that can read and stage BIOS settings (Redfish
// only: IPMI has no standard BIOS attribute interface).
type BIOSDriver interface {
	Driver
	// BIOS reads the attributes in effect, those staged for the next
	// reset, and the attribute registry when the BMC publishes one.
	BIOS(ctx context.Context) (BIOS, error)
	// SetBIOS stages attrs (AttributeName to value as text) in the BIOS
	// settings object; the BMC applies them at the next reset. Values
	// are converted to each attribute's type (integer, boolean, string)
	// as the registry or the current value says.
	SetBIOS(ctx context.Context, attrs map[string]string) error
}

var _ BIOSDriver = (*Client)(nil)

// BIOS is a machine's BIOS settings as its BMC reports them.
type BIOS struct {
	// Attributes are the values in effect, as text.
	Attributes map[string]string `json:"attributes"`
	// Pending are values staged in the settings object that differ from
	// those in effect: what the next reset applies.
	Pending map[string]string `json:"pending,omitempty"`
	// Registry describes the attributes when the BMC publishes an
	// attribute registry; nil when it does not.
	Registry map[string]BIOSAttribute `json:"registry,omitempty"`

	// types are the JSON kinds of the attributes in effect.
	types map[string]string
}

// BIOSAttribute is what an attribute registry says of one attribute.
type BIOSAttribute struct {
	// Type is Redfish's AttributeType: Enumeration, String, Integer,
	// Boolean, Password.
	Type     string   `json:"type"`
	Values   []string `json:"values,omitempty"` // allowed, for an Enumeration
	ReadOnly bool     `json:"read_only,omitempty"`
	Min      *int64   `json:"min,omitempty"`
	Max      *int64   `json:"max,omitempty"`
}

// Check says what is wrong with setting name to value, or "" when the
// BMC's registry (if any) allows it.
func (b BIOS) Check(name, value string) string {
	if b.Registry == nil {
		if _, ok := b.Attributes[name]; !ok && len(b.Attributes) > 0 {
			return fmt.Sprintf("the BMC reports no BIOS attribute %s", name)
		}
		return ""
	}
	a, ok := b.Registry[name]
	if !ok {
		return fmt.Sprintf("the BMC's attribute registry has no BIOS attribute %s", name)
	}
	if a.ReadOnly {
		return fmt.Sprintf("BIOS attribute %s is read-only on this BMC", name)
	}
	switch a.Type {
	case "Enumeration":
		if !slices.Contains(a.Values, value) {
			return fmt.Sprintf("BIOS attribute %s must be one of %s, not %q", name, strings.Join(a.Values, ", "), value)
		}
	case "Integer":
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			return fmt.Sprintf("BIOS attribute %s is an integer, not %q", name, value)
		}
		if (a.Min != nil && n < *a.Min) || (a.Max != nil && n > *a.Max) {
			return fmt.Sprintf("BIOS attribute %s must be within %s, not %d", name, bounds(a), n)
		}
	case "Boolean":
		if value != "true" && value != "false" {
			return fmt.Sprintf("BIOS attribute %s is true or false, not %q", name, value)
		}
	}
	return ""
}

func bounds(a BIOSAttribute) string {
	lo, hi := "-inf", "+inf"
	if a.Min != nil {
		lo = strconv.FormatInt(*a.Min, 10)
	}
	if a.Max != nil {
		hi = strconv.FormatInt(*a.Max, 10)
	}
	return "[" + lo + ", " + hi + "]"
}

// errNoBIOS is a Redfish system with no Bios resource.
var errNoBIOS = fmt.Errorf("%w: the Redfish ComputerSystem has no Bios resource", ErrUnsupported)

// BIOS reads the machine's BIOS attributes, pending settings and registry.
func (c *Client) BIOS(ctx context.Context) (BIOS, error) {
	var out BIOS
	err := c.redfishCall(ctx, "bios", "BIOS settings", true, func(api *gofish.APIClient, sys *redfish.ComputerSystem) error {
		var err error
		out, _, err = readBIOS(api, sys)
		return err
	})
	return out, err
}

// SetBIOS stages attrs in the BIOS settings object.
func (c *Client) SetBIOS(ctx context.Context, attrs map[string]string) error {
	if len(attrs) == 0 && c.cfg.Protocol != ProtocolIPMI {
		return nil
	}
	// A PATCH of the same values is harmless: retrying is safe.
	return c.redfishCall(ctx, "bios settings", "BIOS settings", true, func(api *gofish.APIClient, sys *redfish.ComputerSystem) error {
		cur, target, err := readBIOS(api, sys)
		if err != nil {
			return err
		}
		payload := make(map[string]any, len(attrs))
		names := make([]string, 0, len(attrs))
		for k := range attrs {
			names = append(names, k)
		}
		sort.Strings(names)
		var bad []string
		for _, k := range names {
			if msg := cur.Check(k, attrs[k]); msg != "" {
				bad = append(bad, msg)
				continue
			}
			payload[k] = cur.typed(k, attrs[k])
		}
		if len(bad) > 0 {
			return fmt.Errorf("%w: %s", ErrUnsupported, strings.Join(bad, "; "))
		}
		resp, err := api.Patch(target, map[string]any{"Attributes": payload})
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil
	})
}

// typed converts value to the JSON kind of attribute name: the registry's
// type, else that of the value in effect, else a string.
func (b BIOS) typed(name, value string) any {
	kind := b.types[name]
	if a, ok := b.Registry[name]; ok {
		switch a.Type {
		case "Integer":
			kind = "number"
		case "Boolean":
			kind = "bool"
		default:
			kind = "string"
		}
	}
	switch kind {
	case "number":
		if n, err := strconv.ParseInt(value, 10, 64); err == nil {
			return n
		}
		if f, err := strconv.ParseFloat(value, 64); err == nil {
			return f
		}
	case "bool":
		if v, err := strconv.ParseBool(value); err == nil {
			return v
		}
	}
	return value
}

// readBIOS reads the Bios resource, its settings object and its registry;
// it returns the URI to PATCH staged settings to.
func readBIOS(api *gofish.APIClient, sys *redfish.ComputerSystem) (BIOS, string, error) {
	bios, err := sys.Bios()
	if err != nil {
		return BIOS{}, "", err
	}
	if bios == nil {
		return BIOS{}, "", errNoBIOS
	}
	var raw struct {
		Attributes        map[string]any `json:"Attributes"`
		AttributeRegistry string         `json:"AttributeRegistry"`
		Settings          struct {
			SettingsObject struct {
				ID string `json:"@odata.id"`
			} `json:"SettingsObject"`
		} `json:"@Redfish.Settings"`
	}
	if err := getJSON(api, bios.ODataID, &raw); err != nil {
		return BIOS{}, "", err
	}
	out := BIOS{Attributes: map[string]string{}, types: map[string]string{}}
	for k, v := range raw.Attributes {
		out.Attributes[k], out.types[k] = text(v)
	}
	target := bios.ODataID
	if so := raw.Settings.SettingsObject.ID; so != "" && so != bios.ODataID {
		target = so
		var pending struct {
			Attributes map[string]any `json:"Attributes"`
		}
		if err := getJSON(api, so, &pending); err != nil {
			return BIOS{}, "", fmt.Errorf("read the BIOS settings object: %w", err)
		}
		for k, v := range pending.Attributes {
			if t, _ := text(v); t != out.Attributes[k] {
				if out.Pending == nil {
					out.Pending = map[string]string{}
				}
				out.Pending[k] = t
			}
		}
	}
	if raw.AttributeRegistry != "" {
		// Optional: a BMC without a readable registry is checked against
		// the attributes it reports.
		out.Registry = readRegistry(api, raw.AttributeRegistry)
	}
	return out, target, nil
}

// readRegistry reads a BIOS attribute registry by its Id from
// /redfish/v1/Registries: the file entry's Location, or the registry
// itself. nil when none can be read.
func readRegistry(api *gofish.APIClient, id string) map[string]BIOSAttribute {
	var file struct {
		Location []struct {
			URI string `json:"Uri"`
		} `json:"Location"`
	}
	uri := "/redfish/v1/Registries/" + id
	if err := getJSON(api, uri, &file); err != nil {
		return nil
	}
	if len(file.Location) > 0 && file.Location[0].URI != "" {
		uri = file.Location[0].URI
	}
	var reg struct {
		RegistryEntries struct {
			Attributes []struct {
				AttributeName string
				Type          string
				ReadOnly      bool
				LowerBound    *int64
				UpperBound    *int64
				Value         []struct{ ValueName string }
			}
		}
	}
	if err := getJSON(api, uri, &reg); err != nil || len(reg.RegistryEntries.Attributes) == 0 {
		return nil
	}
	out := make(map[string]BIOSAttribute, len(reg.RegistryEntries.Attributes))
	for _, a := range reg.RegistryEntries.Attributes {
		ba := BIOSAttribute{Type: a.Type, ReadOnly: a.ReadOnly, Min: a.LowerBound, Max: a.UpperBound}
		for _, v := range a.Value {
			ba.Values = append(ba.Values, v.ValueName)
		}
		out[a.AttributeName] = ba
	}
	return out
}

func getJSON(api *gofish.APIClient, uri string, v any) error {
	resp, err := api.Get(uri)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(v)
}

// text renders a JSON attribute value as the site writes it, and its kind.
func text(v any) (string, string) {
	switch x := v.(type) {
	case nil:
		return "", "null"
	case bool:
		return strconv.FormatBool(x), "bool"
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return strconv.FormatInt(int64(x), 10), "number"
		}
		return strconv.FormatFloat(x, 'g', -1, 64), "number"
	case string:
		return x, "string"
	}
	b, _ := json.Marshal(v)
	return string(b), "other"
}
