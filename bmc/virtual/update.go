package virtual

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A virtual firmware image is a header and a payload:
//
//	metal virtual firmware
//	component: BIOS
//	version: 1.17.0
//	sha256: <hex digest of the payload>
//
//	<payload>
//
// The BMC installs it only on the component it names, and only when the
// payload is intact, as a real BMC checks a vendor's signed image.
const imageMagic = "metal virtual firmware"

// FirmwareImage builds a virtual firmware image that installs version on
// component.
func FirmwareImage(component, version string, payload []byte) []byte {
	sum := sha256.Sum256(payload)
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\ncomponent: %s\nversion: %s\nsha256: %s\n\n", imageMagic, component, version, hex.EncodeToString(sum[:]))
	b.Write(payload)
	return b.Bytes()
}

// parseImage checks an image and returns its component and version.
func parseImage(img []byte) (component, version string, err error) {
	header, payload, ok := bytes.Cut(img, []byte("\n\n"))
	if !ok {
		return "", "", errors.New("not a firmware image: no header")
	}
	sc := bufio.NewScanner(bytes.NewReader(header))
	if !sc.Scan() || sc.Text() != imageMagic {
		return "", "", errors.New("not a firmware image for this BMC")
	}
	fields := map[string]string{}
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		fields[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	sum := sha256.Sum256(payload)
	if fields["sha256"] != hex.EncodeToString(sum[:]) {
		return "", "", errors.New("the image is corrupt: its payload does not match its sha256")
	}
	if fields["component"] == "" || fields["version"] == "" {
		return "", "", errors.New("the image names no component or version")
	}
	return fields["component"], fields["version"], nil
}

// task is one Redfish task of the TaskService: a firmware update.
type task struct {
	ID       string
	State    string // New, Running, Completed, Exception
	Status   string // OK, Critical
	Percent  int
	Messages []string
	Start    time.Time
	End      time.Time
	// Target is the URI of the action; Body the JSON it was given.
	Target, Body string
}

func (s *Server) updateRoutes(auth func(string, http.HandlerFunc)) {
	auth("GET /redfish/v1/UpdateService", s.updateService)
	auth("POST /redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate", s.simpleUpdate)
	auth("POST /redfish/v1/UpdateService/upload", s.multipartUpdate)
	auth("GET /redfish/v1/TaskService", s.taskService)
	auth("GET /redfish/v1/TaskService/Tasks", s.taskCollection)
	auth("GET /redfish/v1/TaskService/Tasks/{task}", s.getTask)
}

func (s *Server) updateService(w http.ResponseWriter, _ *http.Request) {
	out := map[string]any{
		"@odata.type": "#UpdateService.v1_8_0.UpdateService", "@odata.id": "/redfish/v1/UpdateService",
		"Id": "UpdateService", "Name": "Update Service", "ServiceEnabled": true, "Status": status("OK"),
		"FirmwareInventory":    link("/redfish/v1/UpdateService/FirmwareInventory"),
		"MultipartHttpPushUri": "/redfish/v1/UpdateService/upload",
	}
	if !s.noSimpleUpdate {
		out["Actions"] = map[string]any{"#UpdateService.SimpleUpdate": map[string]any{
			"target": "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate",
			"TransferProtocol@Redfish.AllowableValues": []string{"HTTP", "HTTPS"},
		}}
	}
	writeJSON(w, http.StatusOK, out)
}

// firmwareTarget is one updateable firmware entry an update names.
type firmwareTarget struct {
	sys *system
	i   int // index in sys.hw.Firmware
}

// resolveTargets maps an update's Targets to firmware entries: entries of
// the FirmwareInventory, or a ComputerSystem for its BIOS.
func (s *Server) resolveTargets(targets []string) ([]firmwareTarget, error) {
	if len(targets) == 0 {
		return nil, errors.New("Targets names no firmware to update")
	}
	var out []firmwareTarget
	for _, t := range targets {
		t = strings.TrimSuffix(t, "/")
		found := false
		for _, id := range s.order {
			sys := s.systems[id]
			for i, fw := range sys.hw.Firmware {
				if t == "/redfish/v1/UpdateService/FirmwareInventory/"+firmwareID(sys, fw) ||
					(t == "/redfish/v1/Systems/"+sys.spec.Name && fw.ID == "BIOS") {
					if !fw.Updateable {
						return nil, fmt.Errorf("firmware %s is not updateable", firmwareID(sys, fw))
					}
					out = append(out, firmwareTarget{sys, i})
					found = true
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("no updateable firmware at %s", t)
		}
	}
	return out, nil
}

func (s *Server) simpleUpdate(w http.ResponseWriter, r *http.Request) {
	if s.noSimpleUpdate {
		redfishError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "this service offers no SimpleUpdate")
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<16))
	var body struct {
		ImageURI         string   `json:"ImageURI"`
		TransferProtocol string   `json:"TransferProtocol"`
		Targets          []string `json:"Targets"`
	}
	if err == nil {
		err = json.Unmarshal(raw, &body)
	}
	if err != nil || body.ImageURI == "" {
		redfishError(w, http.StatusBadRequest, "Base.1.8.ActionParameterMissing", "SimpleUpdate needs an ImageURI")
		return
	}
	if p := body.TransferProtocol; p != "" && p != "HTTP" && p != "HTTPS" {
		redfishError(w, http.StatusBadRequest, "Base.1.8.ActionParameterNotSupported", "TransferProtocol "+p+" is not HTTP or HTTPS")
		return
	}
	targets, err := s.resolveTargets(body.Targets)
	if err != nil {
		redfishError(w, http.StatusBadRequest, "Base.1.8.ActionParameterValueError", err.Error())
		return
	}
	t := s.newTask(r.URL.Path, string(raw))
	s.startFlash(t, targets, func(ctx context.Context) ([]byte, error) { return download(ctx, body.ImageURI) })
	s.acceptedTask(w, t)
}

// multipartUpdate takes the image pushed in the request (the
// UpdateParameters part names the Targets, the UpdateFile part is the
// image), for clients of BMCs without SimpleUpdate.
func (s *Server) multipartUpdate(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseMultipartForm(32 << 20); err != nil {
		redfishError(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "a multipart push needs UpdateParameters and UpdateFile parts: "+err.Error())
		return
	}
	part := func(name string) ([]byte, error) {
		if vs := r.MultipartForm.Value[name]; len(vs) > 0 {
			return []byte(vs[0]), nil
		}
		fhs := r.MultipartForm.File[name]
		if len(fhs) == 0 {
			return nil, fmt.Errorf("no %s part", name)
		}
		f, err := fhs[0].Open()
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return io.ReadAll(f)
	}
	params, err := part("UpdateParameters")
	var body struct {
		Targets []string `json:"Targets"`
	}
	if err == nil {
		err = json.Unmarshal(params, &body)
	}
	if err != nil {
		redfishError(w, http.StatusBadRequest, "Base.1.8.ActionParameterMissing", "UpdateParameters: "+err.Error())
		return
	}
	img, err := part("UpdateFile")
	if err != nil {
		redfishError(w, http.StatusBadRequest, "Base.1.8.ActionParameterMissing", "UpdateFile: "+err.Error())
		return
	}
	targets, err := s.resolveTargets(body.Targets)
	if err != nil {
		redfishError(w, http.StatusBadRequest, "Base.1.8.ActionParameterValueError", err.Error())
		return
	}
	t := s.newTask(r.URL.Path, string(params))
	s.startFlash(t, targets, func(context.Context) ([]byte, error) { return img, nil })
	s.acceptedTask(w, t)
}

func (s *Server) newTask(target, body string) *task {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.taskSeq++
	t := &task{ID: strconv.Itoa(s.taskSeq), State: "New", Status: "OK", Start: time.Now().UTC(), Target: target, Body: body}
	s.tasks[t.ID] = t
	return t
}

// acceptedTask answers an update request as Redfish asks: 202 Accepted,
// the task's URI in Location, the task as the body.
func (s *Server) acceptedTask(w http.ResponseWriter, t *task) {
	s.mu.Lock()
	body := s.taskJSON(t)
	s.mu.Unlock()
	w.Header().Set("Location", "/redfish/v1/TaskService/Tasks/"+t.ID)
	writeJSON(w, http.StatusAccepted, body)
}

// startFlash runs the update in the background: fetch the image, check
// it against each target, take FlashTime, then report and keep the new
// version.
func (s *Server) startFlash(t *task, targets []firmwareTarget, image func(context.Context) ([]byte, error)) {
	set := func(f func()) {
		s.mu.Lock()
		f()
		s.mu.Unlock()
	}
	fail := func(msg string) {
		s.log.Warn("firmware update failed", "task", t.ID, "err", msg)
		set(func() {
			t.State, t.Status, t.End, t.Messages = "Exception", "Critical", time.Now().UTC(), append(t.Messages, msg)
		})
	}
	go func() {
		set(func() { t.State, t.Messages = "Running", append(t.Messages, "downloading the image") })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		img, err := image(ctx)
		if err != nil {
			fail("the image could not be read: " + err.Error())
			return
		}
		component, version, err := parseImage(img)
		if err != nil {
			fail(err.Error())
			return
		}
		for _, ft := range targets {
			if id := ft.sys.hw.Firmware[ft.i].ID; !strings.EqualFold(id, component) {
				fail(fmt.Sprintf("the image is for %s, not %s", component, id))
				return
			}
		}
		set(func() {
			t.Percent, t.Messages = 10, append(t.Messages, "image verified; flashing "+component+" "+version)
		})
		steps := 4
		for i := 1; i <= steps; i++ {
			time.Sleep(s.flashTime / time.Duration(steps))
			set(func() { t.Percent = 10 + 90*i/steps })
		}
		for _, ft := range targets {
			sys := ft.sys
			sys.mu.Lock()
			sys.hw.Firmware[ft.i].Version = version
			sys.flashes++
			err := s.saveState(sys)
			sys.mu.Unlock()
			if err != nil {
				fail("keep the new version: " + err.Error())
				return
			}
			s.log.Info("firmware updated", "machine", sys.spec.Name, "component", component, "version", version)
		}
		set(func() {
			t.State, t.Percent, t.End = "Completed", 100, time.Now().UTC()
			t.Messages = append(t.Messages, component+" is now "+version)
		})
	}()
}

// download fetches an image the way a BMC does: plain HTTP(S) GET.
func download(ctx context.Context, uri string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", uri, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 256<<20))
}

// taskJSON is t as a Redfish Task; s.mu is held.
func (s *Server) taskJSON(t *task) map[string]any {
	msgs := []map[string]string{}
	for _, m := range t.Messages {
		msgs = append(msgs, map[string]string{"MessageId": "Update.1.0.UpdateInProgress", "Message": m})
	}
	out := map[string]any{
		"@odata.type": "#Task.v1_5_0.Task", "@odata.id": "/redfish/v1/TaskService/Tasks/" + t.ID,
		"Id": t.ID, "Name": "Firmware update", "TaskState": t.State, "TaskStatus": t.Status,
		"PercentComplete": t.Percent, "StartTime": t.Start.Format(time.RFC3339), "Messages": msgs,
		"TaskMonitor": "/redfish/v1/TaskService/Tasks/" + t.ID,
		"Payload": map[string]any{
			"HttpOperation": "POST", "TargetUri": t.Target, "JsonBody": t.Body,
			"HttpHeaders": []string{},
		},
	}
	if !t.End.IsZero() {
		out["EndTime"] = t.End.Format(time.RFC3339)
	}
	return out
}

func (s *Server) taskService(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type": "#TaskService.v1_2_0.TaskService", "@odata.id": "/redfish/v1/TaskService",
		"Id": "TaskService", "Name": "Task Service", "ServiceEnabled": true, "Status": status("OK"),
		"CompletedTaskOverWritePolicy": "Oldest", "Tasks": link("/redfish/v1/TaskService/Tasks"),
	})
}

func (s *Server) taskCollection(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	ids := slices.SortedFunc(maps.Keys(s.tasks), func(a, b string) int {
		x, _ := strconv.Atoi(a)
		y, _ := strconv.Atoi(b)
		return x - y
	})
	s.mu.Unlock()
	members := []map[string]string{}
	for _, id := range ids {
		members = append(members, link("/redfish/v1/TaskService/Tasks/"+id))
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type": "#TaskCollection.TaskCollection", "@odata.id": "/redfish/v1/TaskService/Tasks",
		"Name": "Task Collection", "Members": members, "Members@odata.count": len(members),
	})
}

func (s *Server) getTask(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	t, ok := s.tasks[r.PathValue("task")]
	var body map[string]any
	if ok {
		body = s.taskJSON(t)
	}
	s.mu.Unlock()
	if !ok {
		redfishError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no task "+r.PathValue("task"))
		return
	}
	writeJSON(w, http.StatusOK, body)
}

// Firmware returns machine name's firmware versions by component, and how
// many updates it completed.
func (s *Server) Firmware(name string) (map[string]string, int) {
	sys, ok := s.systems[name]
	if !ok {
		return nil, 0
	}
	sys.mu.Lock()
	defer sys.mu.Unlock()
	out := map[string]string{}
	for _, fw := range sys.hw.Firmware {
		out[fw.ID] = fw.Version
	}
	return out, sys.flashes
}
