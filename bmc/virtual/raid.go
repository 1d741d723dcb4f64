package virtual

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Volume is a RAID volume the virtual storage controller holds.
type Volume struct {
	ID       string
	Name     string
	RAIDType string // RAID0, RAID1, RAID5, RAID10
	Bytes    int64
	Drives   []int // indexes in Hardware.Drives
}

// raidTypes are the levels the virtual controller builds.
var raidTypes = []string{"RAID0", "RAID1", "RAID5", "RAID10"}

// raidCapacity is the most a volume of level over drives of the given
// sizes holds, or an error when the level cannot be built on them.
func raidCapacity(level string, sizes []int64) (int64, error) {
	n := int64(len(sizes))
	if n == 0 {
		return 0, errors.New("a volume needs drives")
	}
	small := slices.Min(sizes)
	switch level {
	case "RAID0":
		var sum int64
		for _, s := range sizes {
			sum += s
		}
		return sum, nil
	case "RAID1":
		if n != 2 {
			return 0, fmt.Errorf("RAID1 mirrors 2 drives, not %d", n)
		}
		return small, nil
	case "RAID5":
		if n < 3 {
			return 0, fmt.Errorf("RAID5 needs 3 drives or more, not %d", n)
		}
		return (n - 1) * small, nil
	case "RAID10":
		if n < 4 || n%2 != 0 {
			return 0, fmt.Errorf("RAID10 needs an even number of drives, 4 or more, not %d", n)
		}
		return n / 2 * small, nil
	}
	return 0, fmt.Errorf("RAIDType %q is not one of %s", level, strings.Join(raidTypes, ", "))
}

func (s *Server) raidRoutes(auth func(string, http.HandlerFunc)) {
	auth("GET /redfish/v1/Systems/{id}/Storage/1/Volumes", s.withSystem(s.volumeCollection))
	auth("POST /redfish/v1/Systems/{id}/Storage/1/Volumes", s.withSystem(s.createVolume))
	auth("GET /redfish/v1/Systems/{id}/Storage/1/Volumes/{vol}", s.withSystem(s.getVolume))
	auth("DELETE /redfish/v1/Systems/{id}/Storage/1/Volumes/{vol}", s.withSystem(s.deleteVolume))
}

func volumesPath(sys *system) string {
	return "/redfish/v1/Systems/" + sys.spec.Name + "/Storage/1/Volumes"
}

func (s *Server) volumeCollection(w http.ResponseWriter, _ *http.Request, sys *system) {
	sys.mu.Lock()
	members := []map[string]string{}
	for _, v := range sys.volumes {
		members = append(members, link(volumesPath(sys)+"/"+v.ID))
	}
	sys.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type": "#VolumeCollection.VolumeCollection", "@odata.id": volumesPath(sys),
		"Name": "Volume Collection", "Members": members, "Members@odata.count": len(members),
	})
}

func (s *Server) getVolume(w http.ResponseWriter, r *http.Request, sys *system) {
	sys.mu.Lock()
	defer sys.mu.Unlock()
	for _, v := range sys.volumes {
		if v.ID != r.PathValue("vol") {
			continue
		}
		drives := []map[string]string{}
		for _, d := range v.Drives {
			drives = append(drives, link("/redfish/v1/Systems/"+sys.spec.Name+"/Storage/1/Drives/"+strconv.Itoa(d)))
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"@odata.type": "#Volume.v1_6_0.Volume", "@odata.id": volumesPath(sys) + "/" + v.ID,
			"Id": v.ID, "Name": v.Name, "RAIDType": v.RAIDType, "CapacityBytes": v.Bytes,
			"Status": status("OK"), "Links": map[string]any{"Drives": drives, "Drives@odata.count": len(drives)},
		})
		return
	}
	redfishError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no volume "+r.PathValue("vol"))
}

// createVolume builds a volume as a RAID controller does: on drives no
// other volume uses, at a level they allow, no larger than they hold
// (CapacityBytes absent: all of it).
func (s *Server) createVolume(w http.ResponseWriter, r *http.Request, sys *system) {
	var body struct {
		Name          string `json:"Name"`
		RAIDType      string `json:"RAIDType"`
		CapacityBytes int64  `json:"CapacityBytes"`
		Links         struct {
			Drives []struct {
				ID string `json:"@odata.id"`
			} `json:"Drives"`
		} `json:"Links"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body); err != nil {
		redfishError(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "the request body is not valid JSON: "+err.Error())
		return
	}
	bad := func(msg string) { redfishError(w, http.StatusBadRequest, "Base.1.8.PropertyValueError", msg) }
	sys.mu.Lock()
	defer sys.mu.Unlock()
	used := map[int]bool{}
	for _, v := range sys.volumes {
		if strings.EqualFold(v.Name, body.Name) && body.Name != "" {
			bad("a volume named " + body.Name + " exists")
			return
		}
		for _, d := range v.Drives {
			used[d] = true
		}
	}
	prefix := "/redfish/v1/Systems/" + sys.spec.Name + "/Storage/1/Drives/"
	var drives []int
	var sizes []int64
	for _, l := range body.Links.Drives {
		i, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSuffix(l.ID, "/"), prefix))
		if !strings.HasPrefix(l.ID, prefix) || err != nil || i < 0 || i >= len(sys.hw.Drives) {
			bad("no drive " + l.ID + " on this controller")
			return
		}
		if used[i] || slices.Contains(drives, i) {
			bad("drive " + l.ID + " is already in a volume")
			return
		}
		drives = append(drives, i)
		sizes = append(sizes, sys.hw.Drives[i].Bytes)
	}
	most, err := raidCapacity(body.RAIDType, sizes)
	if err != nil {
		bad(err.Error())
		return
	}
	size := body.CapacityBytes
	if size == 0 {
		size = most
	}
	if size < 0 || size > most {
		bad(fmt.Sprintf("CapacityBytes %d is more than %s on these drives holds (%d)", size, body.RAIDType, most))
		return
	}
	sys.volumeSeq++
	v := Volume{ID: strconv.Itoa(sys.volumeSeq), Name: body.Name, RAIDType: body.RAIDType, Bytes: size, Drives: drives}
	if v.Name == "" {
		v.Name = "Volume " + v.ID
	}
	// The disk first: a volume the machine cannot have is not created.
	if vd, ok := sys.spec.Machine.(VolumeDisks); ok {
		if err := vd.AttachVolume(r.Context(), v); err != nil {
			sys.volumeSeq--
			s.machineError(w, sys, "give the machine the volume's disk", err)
			return
		}
	}
	sys.volumes = append(sys.volumes, v)
	if err := s.saveState(sys); err != nil {
		s.machineError(w, sys, "keep the volumes", err)
		return
	}
	s.log.Info("volume created", "machine", sys.spec.Name, "volume", v.Name, "raid", v.RAIDType, "drives", len(drives))
	w.Header().Set("Location", volumesPath(sys)+"/"+v.ID)
	w.WriteHeader(http.StatusCreated)
}

func (s *Server) deleteVolume(w http.ResponseWriter, r *http.Request, sys *system) {
	sys.mu.Lock()
	defer sys.mu.Unlock()
	i := slices.IndexFunc(sys.volumes, func(v Volume) bool { return v.ID == r.PathValue("vol") })
	if i < 0 {
		redfishError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no volume "+r.PathValue("vol"))
		return
	}
	v := sys.volumes[i]
	if vd, ok := sys.spec.Machine.(VolumeDisks); ok {
		if err := vd.DetachVolume(r.Context(), v); err != nil {
			s.machineError(w, sys, "take the volume's disk away", err)
			return
		}
	}
	sys.volumes = slices.Delete(sys.volumes, i, i+1)
	if err := s.saveState(sys); err != nil {
		s.machineError(w, sys, "keep the volumes", err)
		return
	}
	s.log.Info("volume deleted", "machine", sys.spec.Name, "volume", v.Name)
	w.WriteHeader(http.StatusNoContent)
}

// Volumes returns machine name's RAID volumes.
func (s *Server) Volumes(name string) []Volume {
	sys, ok := s.systems[name]
	if !ok {
		return nil
	}
	sys.mu.Lock()
	defer sys.mu.Unlock()
	return slices.Clone(sys.volumes)
}

// restoreVolumes gives the machine the disks of the volumes its BMC kept
// from a previous run.
func restoreVolumes(sys *system) error {
	vd, ok := sys.spec.Machine.(VolumeDisks)
	if !ok || len(sys.volumes) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, v := range sys.volumes {
		if err := vd.AttachVolume(ctx, v); err != nil {
			return err
		}
	}
	return nil
}
