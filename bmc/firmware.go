package bmc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	bmclib "github.com/bmc-toolbox/bmclib/v2"
	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/redfish"
)

// FirmwareDriver is a Driver that can update firmware through the Redfish
// UpdateService (IPMI has no standard firmware update).
type FirmwareDriver interface {
	Driver
	// Firmware finds one component of the machine's firmware inventory.
	Firmware(ctx context.Context, component string) (FirmwareComponent, error)
	// UpdateFirmware has the BMC install the image at imageURL on
	// component: SimpleUpdate, the BMC pulling the image, where the
	// service offers it, else a multipart push of the image, which the
	// client fetches from imageURL. An update of the same image the BMC
	// is still running is returned instead of starting another.
	UpdateFirmware(ctx context.Context, component, imageURL string) (Task, error)
	// Task reads a task the BMC runs (an update's progress).
	Task(ctx context.Context, uri string) (Task, error)
}

var _ FirmwareDriver = (*Client)(nil)

// FirmwareComponent is one entry of a BMC's firmware inventory.
type FirmwareComponent struct {
	ID         string `json:"id"`
	Name       string `json:"name,omitempty"`
	SoftwareID string `json:"software_id,omitempty"`
	Version    string `json:"version"`
	Updateable bool   `json:"updateable"`
	// URI is what an update targets: the inventory entry, or the
	// ComputerSystem for a BIOS the service reports only as the
	// system's BiosVersion.
	URI string `json:"uri"`
}

// Task is a Redfish task as metal follows it.
type Task struct {
	// URI is the task (or its monitor); "" when the BMC finished the
	// request before answering.
	URI     string `json:"uri,omitempty"`
	State   string `json:"state"`            // TaskState: New, Running, Completed, Exception, ...
	Status  string `json:"status,omitempty"` // TaskStatus: OK, Warning, Critical
	Percent int    `json:"percent,omitempty"`
	Message string `json:"message,omitempty"`
	// Resumed: an update of the same image the BMC was already running,
	// not a new one.
	Resumed bool `json:"resumed,omitempty"`
}

// Done reports whether the task ended, well or not.
func (t Task) Done() bool {
	switch t.State {
	case "Completed", "Exception", "Killed", "Cancelled":
		return true
	}
	return false
}

// Failed reports whether the task ended without doing its work.
func (t Task) Failed() bool {
	return t.Done() && (t.State != "Completed" || t.Status == "Critical")
}

// redfishCall runs fn against the configured ComputerSystem over Redfish:
// the features IPMI has no standard interface for (BIOS settings,
// firmware updates) fail as unsupported, saying what, over IPMI.
func (c *Client) redfishCall(ctx context.Context, op, what string, safeToRetry bool, fn func(*gofish.APIClient, *redfish.ComputerSystem) error) error {
	if c.cfg.Protocol == ProtocolIPMI {
		return c.fail(op, ErrUnsupported, fmt.Errorf("%s need Redfish", what), "IPMI has no standard interface for it; set the bmc protocol to redfish if the BMC speaks it")
	}
	return c.call(ctx, op, safeToRetry, func(ctx context.Context, _ *bmclib.Client, protocol string) error {
		if protocol != ProtocolRedfish {
			return fmt.Errorf("%w: %s need Redfish; this BMC answered only IPMI", ErrUnsupported, what)
		}
		api, sys, err := c.redfishSystem(ctx)
		if err != nil {
			return err
		}
		defer api.Logout()
		return fn(api, sys)
	})
}

// Firmware finds component in the machine's firmware inventory.
func (c *Client) Firmware(ctx context.Context, component string) (FirmwareComponent, error) {
	var out FirmwareComponent
	err := c.redfishCall(ctx, "firmware inventory", "firmware updates", true, func(api *gofish.APIClient, sys *redfish.ComputerSystem) error {
		var err error
		out, err = findComponent(api, sys, component)
		return err
	})
	return out, err
}

// UpdateFirmware starts (or finds running) the update of component to the
// image at imageURL.
func (c *Client) UpdateFirmware(ctx context.Context, component, imageURL string) (Task, error) {
	var out Task
	// Not retried once the request may have reached the BMC: a second
	// POST would flash twice.
	err := c.redfishCall(ctx, "firmware update", "firmware updates", false, func(api *gofish.APIClient, sys *redfish.ComputerSystem) error {
		fw, err := findComponent(api, sys, component)
		if err != nil {
			return err
		}
		if t, ok := runningUpdate(api, imageURL); ok {
			out = t
			return nil
		}
		var us struct {
			Actions struct {
				SimpleUpdate struct {
					Target string `json:"target"`
				} `json:"#UpdateService.SimpleUpdate"`
			} `json:"Actions"`
			Multipart string `json:"MultipartHttpPushUri"`
		}
		if err := getJSON(api, "/redfish/v1/UpdateService", &us); err != nil {
			return fmt.Errorf("read the UpdateService: %w", err)
		}
		switch {
		case us.Actions.SimpleUpdate.Target != "":
			proto := "HTTP"
			if strings.HasPrefix(imageURL, "https://") {
				proto = "HTTPS"
			}
			resp, err := api.Post(us.Actions.SimpleUpdate.Target, map[string]any{
				"ImageURI": imageURL, "TransferProtocol": proto, "Targets": []string{fw.URI},
			})
			if err != nil {
				return err
			}
			out, err = startedTask(resp)
			return err
		case us.Multipart != "":
			image, err := fetchImage(ctx, imageURL)
			if err != nil {
				return err
			}
			params, _ := json.Marshal(map[string]any{"Targets": []string{fw.URI}, "@Redfish.OperationApplyTime": "Immediate"})
			resp, err := api.PostMultipart(us.Multipart, map[string]io.Reader{
				"UpdateParameters": bytes.NewReader(params),
				"UpdateFile":       bytes.NewReader(image),
			})
			if err != nil {
				return err
			}
			out, err = startedTask(resp)
			return err
		}
		return fmt.Errorf("%w: the BMC's UpdateService offers neither SimpleUpdate nor a multipart push URI", ErrUnsupported)
	})
	return out, err
}

// Task reads the task at uri.
func (c *Client) Task(ctx context.Context, uri string) (Task, error) {
	var out Task
	err := c.redfishCall(ctx, "firmware task", "firmware updates", true, func(api *gofish.APIClient, _ *redfish.ComputerSystem) error {
		resp, err := api.Get(uri)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		out, err = readTask(resp, uri)
		return err
	})
	return out, err
}

// maxImage bounds a firmware image metal pushes (BMC flash parts are tens
// of MiB).
const maxImage = 512 << 20

// fetchImage reads the image a multipart push sends; it comes from metal's
// own HTTP server, as SimpleUpdate would have the BMC read it.
func fetchImage(ctx context.Context, imageURL string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, imageURL, nil)
	if err != nil {
		return nil, fmt.Errorf("firmware image: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch the firmware image to push: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch the firmware image to push: %s", resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxImage+1))
	if err != nil {
		return nil, fmt.Errorf("fetch the firmware image to push: %w", err)
	}
	if len(b) > maxImage {
		return nil, fmt.Errorf("the firmware image is larger than %d MiB", maxImage>>20)
	}
	return b, nil
}

// startedTask reads the answer to an update request: a task (202 with the
// Task, or a Location to follow), or done already (200, 204 with no task).
func startedTask(resp *http.Response) (Task, error) {
	defer resp.Body.Close()
	loc := resp.Header.Get("Location")
	if u, err := url.Parse(loc); err == nil && u.Path != "" {
		loc = u.Path
	}
	if resp.StatusCode == http.StatusAccepted || (loc != "" && resp.StatusCode != http.StatusNoContent) {
		t, err := readTask(resp, loc)
		if err != nil || t.URI == "" {
			// A 202 whose body is not the Task: follow the Location.
			return Task{URI: loc, State: "New"}, nil
		}
		return t, nil
	}
	// Done before answering (sushy-tools answers 204 and a Location to
	// a task it does not keep).
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return Task{State: "Completed", Status: "OK"}, nil
}

// readTask decodes a Task (or a task monitor's answer: 202 while it runs).
func readTask(resp *http.Response, uri string) (Task, error) {
	var raw struct {
		ID       string `json:"@odata.id"`
		State    string `json:"TaskState"`
		Status   string `json:"TaskStatus"`
		Percent  *int   `json:"PercentComplete"`
		Messages []struct {
			Message string `json:"Message"`
		} `json:"Messages"`
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if len(bytes.TrimSpace(body)) == 0 {
		if resp.StatusCode == http.StatusAccepted {
			return Task{URI: uri, State: "Running"}, nil
		}
		return Task{URI: uri, State: "Completed", Status: "OK"}, nil
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return Task{}, fmt.Errorf("the BMC's task %s is not JSON: %w", uri, err)
	}
	if raw.State == "" {
		return Task{}, fmt.Errorf("the BMC's answer at %s is not a task (no TaskState)", uri)
	}
	t := Task{URI: uri, State: raw.State, Status: raw.Status}
	if raw.ID != "" {
		t.URI = raw.ID
	}
	if raw.Percent != nil {
		t.Percent = *raw.Percent
	}
	for _, m := range raw.Messages {
		if m.Message != "" {
			t.Message = m.Message // the last says most
		}
	}
	return t, nil
}

// runningUpdate finds an unfinished task of the BMC that installs the
// image at imageURL: an update metal started before it was killed, which
// is waited for rather than started again.
func runningUpdate(api *gofish.APIClient, imageURL string) (Task, bool) {
	var coll struct {
		Members []struct {
			ID string `json:"@odata.id"`
		} `json:"Members"`
	}
	if err := getJSON(api, "/redfish/v1/TaskService/Tasks", &coll); err != nil {
		return Task{}, false
	}
	for _, m := range coll.Members {
		var raw struct {
			State   string `json:"TaskState"`
			Payload struct {
				JSONBody string `json:"JsonBody"`
			} `json:"Payload"`
		}
		if getJSON(api, m.ID, &raw) != nil || raw.State == "" {
			continue
		}
		t := Task{URI: m.ID, State: raw.State, Resumed: true}
		if !t.Done() && strings.Contains(raw.Payload.JSONBody, imageURL) {
			return t, true
		}
	}
	return Task{}, false
}

// findComponent finds component in the service's FirmwareInventory by Id,
// Name or SoftwareId (case does not matter), among the entries related to
// sys when entries say what they belong to (one service, several
// systems). A BIOS absent from the inventory is the system's BiosVersion,
// as services without a FirmwareInventory report it.
func findComponent(api *gofish.APIClient, sys *redfish.ComputerSystem, component string) (FirmwareComponent, error) {
	var coll struct {
		Members []struct {
			ID string `json:"@odata.id"`
		} `json:"Members"`
	}
	var seen []string
	if err := getJSON(api, "/redfish/v1/UpdateService/FirmwareInventory", &coll); err == nil {
		for _, m := range coll.Members {
			var raw struct {
				ID          string `json:"Id"`
				Name        string `json:"Name"`
				SoftwareID  string `json:"SoftwareId"`
				Version     string `json:"Version"`
				Updateable  bool   `json:"Updateable"`
				RelatedItem []struct {
					ID string `json:"@odata.id"`
				} `json:"RelatedItem"`
			}
			if getJSON(api, m.ID, &raw) != nil {
				continue
			}
			if len(raw.RelatedItem) > 0 && !slices.ContainsFunc(raw.RelatedItem, func(r struct {
				ID string `json:"@odata.id"`
			}) bool {
				return strings.TrimSuffix(r.ID, "/") == strings.TrimSuffix(sys.ODataID, "/")
			}) {
				continue
			}
			seen = append(seen, orName(raw.SoftwareID, raw.ID))
			for _, k := range []string{raw.ID, raw.Name, raw.SoftwareID} {
				if k != "" && strings.EqualFold(k, component) {
					return FirmwareComponent{ID: raw.ID, Name: raw.Name, SoftwareID: raw.SoftwareID, Version: raw.Version, Updateable: raw.Updateable, URI: m.ID}, nil
				}
			}
		}
	}
	if strings.EqualFold(component, "BIOS") && sys.BIOSVersion != "" {
		return FirmwareComponent{ID: "BIOS", Name: "BIOS", Version: sys.BIOSVersion, Updateable: true, URI: sys.ODataID}, nil
	}
	if len(seen) == 0 {
		return FirmwareComponent{}, fmt.Errorf("%w: the BMC reports no firmware inventory, and no component %s", ErrUnsupported, component)
	}
	return FirmwareComponent{}, fmt.Errorf("%w: the BMC's firmware inventory has no component %s (it has %s)", errNoComponent, component, strings.Join(seen, ", "))
}

// errNoComponent: the site names a firmware component the BMC does not list.
var errNoComponent = errors.New("no such firmware component")
