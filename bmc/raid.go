package bmc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/redfish"
)

// RAIDDriver is a Driver that can read and change the RAID volumes of
// the machine's storage controller (Redfish Storage Volumes).
type RAIDDriver interface {
	Driver
	// Storage reads the controller's drives and volumes.
	Storage(ctx context.Context) (Storage, error)
	// CreateVolume builds a volume.
	CreateVolume(ctx context.Context, v NewVolume) error
	// DeleteVolume deletes the volume at uri, and its data.
	DeleteVolume(ctx context.Context, uri string) error
}

var _ RAIDDriver = (*Client)(nil)

// Storage is a RAID controller as its BMC reports it.
type Storage struct {
	// Volumes is the collection new volumes are POSTed to.
	VolumesURI string       `json:"volumes_uri"`
	RAIDTypes  []string     `json:"raid_types,omitempty"`
	Drives     []StorageRef `json:"drives"`
	Volumes    []Volume     `json:"volumes"`
}

// StorageRef is a drive of the controller.
type StorageRef struct {
	ID    string `json:"id"`
	Name  string `json:"name,omitempty"`
	Bytes int64  `json:"bytes"`
	URI   string `json:"uri"`
}

// Volume is one RAID volume.
type Volume struct {
	Name     string   `json:"name"`
	RAIDType string   `json:"raid_type"`
	Bytes    int64    `json:"bytes"`
	Drives   []string `json:"drives"` // drive URIs
	URI      string   `json:"uri"`
}

// NewVolume is a volume to build: Bytes 0 takes all the drives hold.
type NewVolume struct {
	Name     string
	RAIDType string
	Bytes    int64
	Drives   []string // drive URIs
}

// Storage reads the first storage controller of the system that keeps
// volumes.
func (c *Client) Storage(ctx context.Context) (Storage, error) {
	var out Storage
	err := c.redfishCall(ctx, "storage", "RAID volumes", true, func(api *gofish.APIClient, sys *redfish.ComputerSystem) error {
		var err error
		out, err = readStorage(api, sys)
		return err
	})
	return out, err
}

// CreateVolume POSTs a volume to the controller's Volumes, unless one of
// that name is there already (a retried or resumed create).
func (c *Client) CreateVolume(ctx context.Context, v NewVolume) error {
	// Not retried once sent: a second POST would build a second volume.
	return c.redfishCall(ctx, "create volume", "RAID volumes", false, func(api *gofish.APIClient, sys *redfish.ComputerSystem) error {
		st, err := readStorage(api, sys)
		if err != nil {
			return err
		}
		for _, have := range st.Volumes {
			if v.Name != "" && strings.EqualFold(have.Name, v.Name) {
				return nil
			}
		}
		body := map[string]any{"Name": v.Name, "RAIDType": v.RAIDType}
		if v.Bytes > 0 {
			body["CapacityBytes"] = v.Bytes
		}
		var drives []map[string]string
		for _, d := range v.Drives {
			drives = append(drives, map[string]string{"@odata.id": d})
		}
		body["Links"] = map[string]any{"Drives": drives}
		resp, err := api.Post(st.VolumesURI, body)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		return nil
	})
}

// DeleteVolume deletes a volume.
func (c *Client) DeleteVolume(ctx context.Context, uri string) error {
	return c.redfishCall(ctx, "delete volume", "RAID volumes", true, func(api *gofish.APIClient, _ *redfish.ComputerSystem) error {
		_, err := api.Delete(uri)
		return err
	})
}

func readStorage(api *gofish.APIClient, sys *redfish.ComputerSystem) (Storage, error) {
	var coll struct {
		Members []struct {
			ID string `json:"@odata.id"`
		} `json:"Members"`
	}
	if err := getJSON(api, sys.ODataID+"/Storage", &coll); err != nil {
		return Storage{}, fmt.Errorf("%w: the system has no Storage: %v", ErrUnsupported, err)
	}
	for _, m := range coll.Members {
		var raw struct {
			Drives []struct {
				ID string `json:"@odata.id"`
			} `json:"Drives"`
			Volumes struct {
				ID string `json:"@odata.id"`
			} `json:"Volumes"`
			Controllers []struct {
				RAIDTypes []string `json:"SupportedRAIDTypes"`
			} `json:"StorageControllers"`
		}
		if err := getJSON(api, m.ID, &raw); err != nil || raw.Volumes.ID == "" {
			continue
		}
		st := Storage{VolumesURI: raw.Volumes.ID}
		for _, ctl := range raw.Controllers {
			st.RAIDTypes = append(st.RAIDTypes, ctl.RAIDTypes...)
		}
		for _, d := range raw.Drives {
			var drive struct {
				ID    string `json:"Id"`
				Name  string `json:"Name"`
				Bytes int64  `json:"CapacityBytes"`
			}
			if err := getJSON(api, d.ID, &drive); err != nil {
				return Storage{}, fmt.Errorf("read drive %s: %w", d.ID, err)
			}
			st.Drives = append(st.Drives, StorageRef{ID: drive.ID, Name: drive.Name, Bytes: drive.Bytes, URI: d.ID})
		}
		var vols struct {
			Members []struct {
				ID string `json:"@odata.id"`
			} `json:"Members"`
		}
		if err := getJSON(api, st.VolumesURI, &vols); err != nil {
			return Storage{}, fmt.Errorf("read the volumes: %w", err)
		}
		for _, vm := range vols.Members {
			var v struct {
				Name     string `json:"Name"`
				RAIDType string `json:"RAIDType"`
				Bytes    int64  `json:"CapacityBytes"`
				Links    struct {
					Drives []struct {
						ID string `json:"@odata.id"`
					} `json:"Drives"`
				} `json:"Links"`
			}
			if err := getJSON(api, vm.ID, &v); err != nil {
				return Storage{}, fmt.Errorf("read volume %s: %w", vm.ID, err)
			}
			vol := Volume{Name: v.Name, RAIDType: v.RAIDType, Bytes: v.Bytes, URI: vm.ID}
			for _, d := range v.Links.Drives {
				vol.Drives = append(vol.Drives, d.ID)
			}
			st.Volumes = append(st.Volumes, vol)
		}
		return st, nil
	}
	return Storage{}, fmt.Errorf("%w: no storage controller of the system keeps RAID volumes", errNoRAID)
}

var errNoRAID = errors.New("no RAID controller")

// Drive finds a drive of the controller by Id or Name.
func (s Storage) Drive(ref string) (StorageRef, bool) {
	for _, d := range s.Drives {
		if strings.EqualFold(d.ID, ref) || strings.EqualFold(d.Name, ref) {
			return d, true
		}
	}
	return StorageRef{}, false
}
