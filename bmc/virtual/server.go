package virtual

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// MachineSpec is one machine the server exposes as a ComputerSystem.
type MachineSpec struct {
	// Name is the system's Id and Name (bmc Config.System selects by it).
	Name    string
	Machine Machine
	// Inventory shown in the ComputerSystem resource.
	Manufacturer string
	Model        string
	Serial       string
	BIOSVersion  string
	MACs         []string
	// BIOS overrides the virtual BIOS's default attribute values.
	BIOS map[string]any
	// NoBIOS leaves the Bios resource out, as some BMCs do.
	NoBIOS bool
	// Hardware is what the BMC reports of the machine's parts (nil: a
	// small default server, DefaultHardware).
	Hardware *Hardware
}

// How a Server authenticates clients (Options.Auth). Real services differ,
// and metal's client must cope with each.
const (
	// AuthSessions offers a SessionService and also takes HTTP Basic
	// auth, as most BMCs do.
	AuthSessions = ""
	// AuthBasicOnly has no SessionService and takes Basic auth on every
	// URL but /redfish and the service root, as sushy-tools with an auth
	// file.
	AuthBasicOnly = "basic"
	// AuthNone has no SessionService and checks no credentials, as
	// sushy-tools without an auth file.
	AuthNone = "none"
	// AuthSessionsRefused names a SessionService whose login always
	// fails (HTTP 405), while Basic auth works, as some BMCs with
	// sessions disabled or exhausted do.
	AuthSessionsRefused = "sessions-refused"
)

// Options configure a Server.
type Options struct {
	Username string
	Password string
	// Auth is one of AuthSessions (default), AuthBasicOnly, AuthNone and
	// AuthSessionsRefused.
	Auth string
	Log  *slog.Logger
	// StateDir, when set, keeps each machine's firmware versions, BIOS
	// settings and RAID volumes across restarts of the server (NAME.json).
	StateDir string
	// FlashTime is how long a firmware update takes once its image is
	// checked (default 2 s).
	FlashTime time.Duration
	// NoSimpleUpdate leaves SimpleUpdate out of the UpdateService: only
	// the multipart push is offered, as on some BMCs.
	NoSimpleUpdate bool
}

// Server is a Redfish service for a set of machines. It is an
// http.Handler; Serve runs it on a listener.
type Server struct {
	user, pass string
	authMode   string
	log        *slog.Logger
	mux        *http.ServeMux

	systems map[string]*system
	order   []string

	stateDir       string
	flashTime      time.Duration
	noSimpleUpdate bool

	mu       sync.Mutex
	sessions map[string]session // by token
	tasks    map[string]*task   // by Id
	taskSeq  int
}

type system struct {
	spec MachineSpec
	hw   Hardware
	mu   sync.Mutex // held across a machine operation; one at a time
	boot Boot
	// media is what Redfish reports as inserted.
	media string
	// bios holds the BIOS attributes in effect; biosPending those staged
	// in the settings object, applied at the next reset or power on.
	bios        map[string]any
	biosPending map[string]any
	biosPatches int
	// flashes counts the firmware updates completed.
	flashes int
	// volumes are the RAID volumes of its storage controller.
	volumes   []Volume
	volumeSeq int
}

type session struct {
	id, user string
}

// bootReporter is implemented by machines that track the spending of a
// Once boot override themselves (QEMU does).
type bootReporter interface{ BootOverride() Boot }

// NewServer returns a Redfish service for machines.
func NewServer(opts Options, machines ...MachineSpec) (*Server, error) {
	switch opts.Auth {
	case AuthSessions, AuthBasicOnly, AuthSessionsRefused:
		if opts.Username == "" || opts.Password == "" {
			return nil, errors.New("virtual bmc: a username and password are required")
		}
	case AuthNone:
	default:
		return nil, fmt.Errorf("virtual bmc: unknown auth %q (want sessions, basic, none or sessions-refused)", opts.Auth)
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		user: opts.Username, pass: opts.Password, authMode: opts.Auth, log: log,
		systems: map[string]*system{}, sessions: map[string]session{}, tasks: map[string]*task{},
		stateDir: opts.StateDir, flashTime: opts.FlashTime, noSimpleUpdate: opts.NoSimpleUpdate,
	}
	if s.flashTime <= 0 {
		s.flashTime = 2 * time.Second
	}
	// Made here, not at the first write: a missing directory would fail a
	// firmware update after the image was flashed.
	if s.stateDir != "" {
		if err := os.MkdirAll(s.stateDir, 0o755); err != nil {
			return nil, fmt.Errorf("virtual bmc: state directory: %w", err)
		}
	}
	for _, m := range machines {
		if m.Name == "" || strings.ContainsAny(m.Name, "/?#% ") {
			return nil, fmt.Errorf("virtual bmc: machine name %q is not usable in a URL", m.Name)
		}
		if _, dup := s.systems[m.Name]; dup {
			return nil, fmt.Errorf("virtual bmc: machine %q given twice", m.Name)
		}
		if m.Machine == nil {
			return nil, fmt.Errorf("virtual bmc: machine %q has no implementation", m.Name)
		}
		hw := DefaultHardware(m)
		if m.Hardware != nil {
			hw = *m.Hardware
		}
		// Updates change the versions: the spec's list stays the caller's.
		hw.Firmware = slices.Clone(hw.Firmware)
		sys := &system{spec: m, hw: hw, boot: Boot{Target: "None", Enabled: "Disabled", Mode: "UEFI"}, bios: defaultBIOS(m.BIOS)}
		if err := s.loadState(sys); err != nil {
			return nil, fmt.Errorf("virtual bmc: machine %q: %w", m.Name, err)
		}
		if err := restoreVolumes(sys); err != nil {
			return nil, fmt.Errorf("virtual bmc: machine %q: %w", m.Name, err)
		}
		s.systems[m.Name] = sys
		s.order = append(s.order, m.Name)
	}
	s.routes()
	return s, nil
}

// Serve answers Redfish on ln until ctx ends. With cert non-nil it speaks
// HTTPS.
func (s *Server) Serve(ctx context.Context, ln net.Listener, cert *tls.Certificate) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if cert != nil {
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, hs.TLSConfig)
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("virtual bmc: serve: %w", err)
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(shut)
		return nil
	}
}

func (s *Server) routes() {
	m := http.NewServeMux()
	open := func(pattern string, h http.HandlerFunc) { m.HandleFunc(pattern, h) }
	auth := func(pattern string, h http.HandlerFunc) { m.Handle(pattern, s.authenticated(h)) }

	open("GET /redfish", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"v1": "/redfish/v1/"})
	})
	open("GET /redfish/v1", s.serviceRoot)
	open("GET /redfish/v1/odata", s.odata)
	if s.hasSessions() {
		open("POST /redfish/v1/SessionService/Sessions", s.createSession)
		auth("GET /redfish/v1/SessionService", s.sessionService)
		auth("GET /redfish/v1/SessionService/Sessions", s.listSessions)
		auth("GET /redfish/v1/SessionService/Sessions/{id}", s.getSession)
		auth("DELETE /redfish/v1/SessionService/Sessions/{id}", s.deleteSession)
	}

	auth("GET /redfish/v1/Systems", s.collection("/redfish/v1/Systems", "#ComputerSystemCollection.ComputerSystemCollection", "Computer System Collection"))
	auth("GET /redfish/v1/Systems/{id}", s.withSystem(s.getSystem))
	auth("PATCH /redfish/v1/Systems/{id}", s.withSystem(s.patchSystem))
	auth("POST /redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset", s.withSystem(s.reset))
	auth("GET /redfish/v1/Systems/{id}/ResetActionInfo", s.withSystem(s.resetActionInfo))
	auth("GET /redfish/v1/Systems/{id}/EthernetInterfaces", s.withSystem(s.listNICs))
	auth("GET /redfish/v1/Systems/{id}/EthernetInterfaces/{nic}", s.withSystem(s.getNIC))
	auth("GET /redfish/v1/Systems/{id}/SecureBoot", s.withSystem(s.getSecureBoot))
	s.biosRoutes(auth)
	s.hardwareRoutes(auth)
	s.updateRoutes(auth)
	s.raidRoutes(auth)

	auth("GET /redfish/v1/Managers", s.collection("/redfish/v1/Managers", "#ManagerCollection.ManagerCollection", "Manager Collection"))
	auth("GET /redfish/v1/Managers/{id}", s.withSystem(s.getManager))
	auth("GET /redfish/v1/Managers/{id}/VirtualMedia", s.withSystem(s.listMedia))
	auth("GET /redfish/v1/Managers/{id}/VirtualMedia/Cd", s.withSystem(s.getMedia))
	auth("PATCH /redfish/v1/Managers/{id}/VirtualMedia/Cd", s.withSystem(s.patchMedia))
	auth("POST /redfish/v1/Managers/{id}/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia", s.withSystem(s.insertMedia))
	auth("POST /redfish/v1/Managers/{id}/VirtualMedia/Cd/Actions/VirtualMedia.EjectMedia", s.withSystem(s.ejectMedia))

	auth("GET /redfish/v1/Chassis", s.collection("/redfish/v1/Chassis", "#ChassisCollection.ChassisCollection", "Chassis Collection"))
	auth("GET /redfish/v1/Chassis/{id}", s.withSystem(s.getChassis))
	s.mux = m
}

// ServeHTTP answers one Redfish request. Clients differ on trailing
// slashes (/redfish/v1/ is the canonical root), so they are dropped before
// routing.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p := r.URL.Path; len(p) > 1 && strings.HasSuffix(p, "/") {
		r.URL.Path = strings.TrimRight(p, "/")
	}
	w.Header().Set("OData-Version", "4.0")
	s.log.Debug("redfish request", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
	if _, pattern := s.mux.Handler(r); pattern == "" {
		if s.pathExists(r) {
			redfishError(w, http.StatusMethodNotAllowed, "Base.1.8.OperationNotAllowed", r.Method+" is not allowed on "+r.URL.Path)
			return
		}
		redfishError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no resource at "+r.URL.Path)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) pathExists(r *http.Request) bool {
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, p := s.mux.Handler(probe); p != "" {
			return true
		}
	}
	return false
}

func (s *Server) hasSessions() bool {
	return s.authMode == AuthSessions || s.authMode == AuthSessionsRefused
}

// authenticated accepts a session token or HTTP basic credentials.
func (s *Server) authenticated(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.authMode == AuthNone {
			h.ServeHTTP(w, r)
			return
		}
		if tok := r.Header.Get("X-Auth-Token"); tok != "" {
			s.mu.Lock()
			_, ok := s.sessions[tok]
			s.mu.Unlock()
			if ok {
				h.ServeHTTP(w, r)
				return
			}
		} else if u, p, ok := r.BasicAuth(); ok && s.credentialsOK(u, p) {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="metal virtual bmc"`)
		redfishError(w, http.StatusUnauthorized, "Base.1.8.InsufficientPrivilege", "authentication required: a valid session token or username and password")
	})
}

func (s *Server) credentialsOK(user, pass string) bool {
	u := subtle.ConstantTimeCompare([]byte(user), []byte(s.user))
	p := subtle.ConstantTimeCompare([]byte(pass), []byte(s.pass))
	return u&p == 1
}

func (s *Server) serviceRoot(w http.ResponseWriter, _ *http.Request) {
	root := map[string]any{
		"@odata.type":    "#ServiceRoot.v1_11_0.ServiceRoot",
		"@odata.id":      "/redfish/v1",
		"@odata.context": "/redfish/v1/$metadata#ServiceRoot.ServiceRoot",
		"Id":             "RootService",
		"Name":           "metal virtual BMC",
		"RedfishVersion": "1.11.0",
		"UUID":           "6d6574616c2d76626d632d726f6f7400",
		"Vendor":         "metal",
		"Systems":        link("/redfish/v1/Systems"),
		"Managers":       link("/redfish/v1/Managers"),
		"Chassis":        link("/redfish/v1/Chassis"),
		"UpdateService":  link("/redfish/v1/UpdateService"),
		"SessionService": link("/redfish/v1/SessionService"),
		"Tasks":          link("/redfish/v1/TaskService"),
		"Links":          map[string]any{"Sessions": link("/redfish/v1/SessionService/Sessions")},
		"ProtocolFeaturesSupported": map[string]any{
			"ExcerptQuery": false, "ExpandQuery": map[string]any{"ExpandAll": false},
			"FilterQuery": false, "OnlyMemberQuery": false, "SelectQuery": false,
		},
	}
	if !s.hasSessions() {
		delete(root, "SessionService")
		delete(root, "Links")
	}
	writeJSON(w, http.StatusOK, root)
}

func (s *Server) odata(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.context": "/redfish/v1/$metadata",
		"value": []map[string]string{
			{"name": "Service", "kind": "Singleton", "url": "/redfish/v1/"},
			{"name": "Systems", "kind": "Singleton", "url": "/redfish/v1/Systems"},
			{"name": "Managers", "kind": "Singleton", "url": "/redfish/v1/Managers"},
			{"name": "Chassis", "kind": "Singleton", "url": "/redfish/v1/Chassis"},
			{"name": "SessionService", "kind": "Singleton", "url": "/redfish/v1/SessionService"},
		},
	})
}

func (s *Server) sessionService(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type":    "#SessionService.v1_1_8.SessionService",
		"@odata.id":      "/redfish/v1/SessionService",
		"Id":             "SessionService",
		"Name":           "Session Service",
		"ServiceEnabled": true,
		"SessionTimeout": 600,
		"Sessions":       link("/redfish/v1/SessionService/Sessions"),
	})
}

func (s *Server) createSession(w http.ResponseWriter, r *http.Request) {
	if s.authMode == AuthSessionsRefused {
		redfishError(w, http.StatusMethodNotAllowed, "Base.1.8.OperationNotAllowed", "sessions are disabled on this service")
		return
	}
	var body struct {
		UserName string `json:"UserName"`
		Password string `json:"Password"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body); err != nil {
		redfishError(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "the session request is not JSON with UserName and Password")
		return
	}
	if !s.credentialsOK(body.UserName, body.Password) {
		s.log.Info("redfish login refused", "user", body.UserName, "remote", r.RemoteAddr)
		redfishError(w, http.StatusUnauthorized, "Base.1.8.NoValidSession", "invalid username or password")
		return
	}
	tok, id := randomHex(16), randomHex(8)
	s.mu.Lock()
	s.sessions[tok] = session{id: id, user: body.UserName}
	s.mu.Unlock()
	loc := "/redfish/v1/SessionService/Sessions/" + id
	w.Header().Set("X-Auth-Token", tok)
	w.Header().Set("Location", loc)
	writeJSON(w, http.StatusCreated, sessionJSON(id, body.UserName))
}

func sessionJSON(id, user string) map[string]any {
	return map[string]any{
		"@odata.type": "#Session.v1_3_0.Session",
		"@odata.id":   "/redfish/v1/SessionService/Sessions/" + id,
		"Id":          id, "Name": "User Session", "UserName": user,
	}
}

func (s *Server) listSessions(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	var ids []string
	for _, se := range s.sessions {
		ids = append(ids, se.id)
	}
	s.mu.Unlock()
	sort.Strings(ids)
	members := make([]map[string]string, 0, len(ids))
	for _, id := range ids {
		members = append(members, link("/redfish/v1/SessionService/Sessions/"+id))
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type": "#SessionCollection.SessionCollection",
		"@odata.id":   "/redfish/v1/SessionService/Sessions",
		"Name":        "Session Collection", "Members": members, "Members@odata.count": len(members),
	})
}

func (s *Server) findSession(id string) (string, session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for tok, se := range s.sessions {
		if se.id == id {
			return tok, se, true
		}
	}
	return "", session{}, false
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request) {
	_, se, ok := s.findSession(r.PathValue("id"))
	if !ok {
		redfishError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no such session")
		return
	}
	writeJSON(w, http.StatusOK, sessionJSON(se.id, se.user))
}

func (s *Server) deleteSession(w http.ResponseWriter, r *http.Request) {
	tok, _, ok := s.findSession(r.PathValue("id"))
	if !ok {
		redfishError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no such session")
		return
	}
	s.mu.Lock()
	delete(s.sessions, tok)
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) collection(path, typ, name string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		members := make([]map[string]string, 0, len(s.order))
		for _, id := range s.order {
			members = append(members, link(path+"/"+id))
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"@odata.type": typ, "@odata.id": path, "Name": name,
			"Members": members, "Members@odata.count": len(members),
		})
	}
}

// withSystem resolves {id} to a system.
func (s *Server) withSystem(h func(http.ResponseWriter, *http.Request, *system)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sys, ok := s.systems[r.PathValue("id")]
		if !ok {
			redfishError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no system or manager "+r.PathValue("id"))
			return
		}
		h(w, r, sys)
	}
}

func (sys *system) currentBoot() Boot {
	if br, ok := sys.spec.Machine.(bootReporter); ok {
		b := br.BootOverride()
		if b.Target != "" {
			return b
		}
	}
	return sys.boot
}

func (s *Server) getSystem(w http.ResponseWriter, r *http.Request, sys *system) {
	sys.mu.Lock()
	power, err := sys.spec.Machine.PowerState(r.Context())
	boot := sys.currentBoot()
	biosVersion := sys.biosVersion()
	sys.mu.Unlock()
	if err != nil {
		s.machineError(w, sys, "read power state", err)
		return
	}
	id := sys.spec.Name
	base := "/redfish/v1/Systems/" + id
	out := map[string]any{
		"@odata.type":  "#ComputerSystem.v1_13_0.ComputerSystem",
		"@odata.id":    base,
		"Id":           id,
		"Name":         id,
		"SystemType":   "Virtual",
		"Manufacturer": orDefault(sys.spec.Manufacturer, "QEMU"),
		"Model":        orDefault(sys.spec.Model, "Standard PC"),
		"SerialNumber": sys.spec.Serial,
		"BiosVersion":  biosVersion,
		"PowerState":   string(power),
		"Status":       map[string]string{"State": "Enabled", "Health": "OK"},
		"Boot": map[string]any{
			"BootSourceOverrideTarget":                         boot.Target,
			"BootSourceOverrideEnabled":                        boot.Enabled,
			"BootSourceOverrideMode":                           boot.Mode,
			"BootSourceOverrideTarget@Redfish.AllowableValues": bootTargets,
		},
		"EthernetInterfaces": link(base + "/EthernetInterfaces"),
		"Processors":         link(base + "/Processors"),
		"Memory":             link(base + "/Memory"),
		"Storage":            link(base + "/Storage"),
		"ProcessorSummary":   sys.hw.processorSummary(),
		"MemorySummary":      sys.hw.memorySummary(),
		"Links": map[string]any{
			"Chassis":   []map[string]string{link("/redfish/v1/Chassis/" + id)},
			"ManagedBy": []map[string]string{link("/redfish/v1/Managers/" + id)},
		},
		"Actions": map[string]any{
			"#ComputerSystem.Reset": map[string]any{
				"target":                            base + "/Actions/ComputerSystem.Reset",
				"ResetType@Redfish.AllowableValues": resetTypes,
				"@Redfish.ActionInfo":               base + "/ResetActionInfo",
			},
		},
	}
	if !sys.spec.NoBIOS {
		out["Bios"] = link(base + "/Bios")
	}
	if _, ok, err := sys.secureBoot(r); err != nil {
		s.machineError(w, sys, "read secure boot state", err)
		return
	} else if ok {
		out["SecureBoot"] = link(base + "/SecureBoot")
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) resetActionInfo(w http.ResponseWriter, _ *http.Request, sys *system) {
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type": "#ActionInfo.v1_1_2.ActionInfo",
		"@odata.id":   "/redfish/v1/Systems/" + sys.spec.Name + "/ResetActionInfo",
		"Id":          "ResetActionInfo", "Name": "Reset Action Info",
		"Parameters": []map[string]any{{
			"Name": "ResetType", "Required": true, "DataType": "String", "AllowableValues": resetTypes,
		}},
	})
}

func (s *Server) patchSystem(w http.ResponseWriter, r *http.Request, sys *system) {
	var body struct {
		Boot *struct {
			Target  *string `json:"BootSourceOverrideTarget"`
			Enabled *string `json:"BootSourceOverrideEnabled"`
			Mode    *string `json:"BootSourceOverrideMode"`
		} `json:"Boot"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body); err != nil {
		redfishError(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "the request body is not valid JSON: "+err.Error())
		return
	}
	if body.Boot == nil {
		redfishError(w, http.StatusBadRequest, "Base.1.8.PropertyUnknown", "only Boot can be changed on this system")
		return
	}
	sys.mu.Lock()
	defer sys.mu.Unlock()
	b := sys.currentBoot()
	for _, f := range []struct {
		v       *string
		dst     *string
		name    string
		allowed []string
	}{
		{body.Boot.Target, &b.Target, "BootSourceOverrideTarget", bootTargets},
		{body.Boot.Enabled, &b.Enabled, "BootSourceOverrideEnabled", bootEnabled},
		{body.Boot.Mode, &b.Mode, "BootSourceOverrideMode", bootModes},
	} {
		if f.v == nil {
			continue
		}
		if !slices.Contains(f.allowed, *f.v) {
			redfishError(w, http.StatusBadRequest, "Base.1.8.PropertyValueNotInList",
				fmt.Sprintf("%s %q is not one of %s", f.name, *f.v, strings.Join(f.allowed, ", ")))
			return
		}
		*f.dst = *f.v
	}
	// Choosing a target without saying for how long means "next boot", as
	// on most BMCs.
	if body.Boot.Target != nil && body.Boot.Enabled == nil && b.Enabled == "Disabled" && b.Target != "None" {
		b.Enabled = "Once"
	}
	if err := sys.spec.Machine.SetBootDevice(r.Context(), b); err != nil {
		s.machineError(w, sys, "set boot device", err)
		return
	}
	sys.boot = b
	s.log.Info("boot override set", "machine", sys.spec.Name, "target", b.Target, "enabled", b.Enabled, "mode", b.Mode)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) reset(w http.ResponseWriter, r *http.Request, sys *system) {
	var body struct {
		ResetType string `json:"ResetType"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body); err != nil {
		redfishError(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "the request body is not valid JSON: "+err.Error())
		return
	}
	if !slices.Contains(resetTypes, body.ResetType) {
		redfishError(w, http.StatusBadRequest, "Base.1.8.ActionParameterNotSupported",
			fmt.Sprintf("ResetType %q is not one of %s", body.ResetType, strings.Join(resetTypes, ", ")))
		return
	}
	sys.mu.Lock()
	defer sys.mu.Unlock()
	m := sys.spec.Machine
	ctx := r.Context()
	was, err := m.PowerState(ctx)
	if err != nil {
		s.machineError(w, sys, "read power state", err)
		return
	}
	switch body.ResetType {
	case "On":
		err = m.PowerOn(ctx)
	case "ForceOff":
		err = m.PowerOff(ctx, true)
	case "GracefulShutdown":
		err = m.PowerOff(ctx, false)
	case "ForceRestart", "GracefulRestart", "PowerCycle":
		// A VM has no OS-cooperative restart without a guest agent; all
		// restarts are resets.
		err = m.Reset(ctx)
	}
	if err != nil {
		s.machineError(w, sys, "reset "+body.ResetType, err)
		return
	}
	starts := body.ResetType != "ForceOff" && body.ResetType != "GracefulShutdown"
	if starts && sys.boot.Enabled == "Once" {
		sys.boot.Enabled, sys.boot.Target = "Disabled", "None"
	}
	// The firmware starts anew (a reset, or power on from off): staged
	// BIOS settings take effect, as on real machines.
	if starts && (body.ResetType != "On" || was != PowerOn) {
		s.applyPendingBIOS(sys)
	}
	s.log.Info("reset done", "machine", sys.spec.Name, "type", body.ResetType)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listNICs(w http.ResponseWriter, _ *http.Request, sys *system) {
	base := "/redfish/v1/Systems/" + sys.spec.Name + "/EthernetInterfaces"
	members := make([]map[string]string, 0, len(sys.spec.MACs))
	for i := range sys.spec.MACs {
		members = append(members, link(fmt.Sprintf("%s/%d", base, i)))
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type": "#EthernetInterfaceCollection.EthernetInterfaceCollection",
		"@odata.id":   base, "Name": "Ethernet Interface Collection",
		"Members": members, "Members@odata.count": len(members),
	})
}

func (s *Server) getNIC(w http.ResponseWriter, r *http.Request, sys *system) {
	n := r.PathValue("nic")
	for i, mac := range sys.spec.MACs {
		if fmt.Sprint(i) == n {
			writeJSON(w, http.StatusOK, map[string]any{
				"@odata.type":         "#EthernetInterface.v1_6_0.EthernetInterface",
				"@odata.id":           "/redfish/v1/Systems/" + sys.spec.Name + "/EthernetInterfaces/" + n,
				"Id":                  n,
				"Name":                "NIC " + n,
				"MACAddress":          mac,
				"PermanentMACAddress": mac,
				"LinkStatus":          "LinkUp",
				"SpeedMbps":           sys.hw.NICMbps,
				"Status":              map[string]string{"State": "Enabled", "Health": "OK"},
			})
			return
		}
	}
	redfishError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no such interface")
}

func (s *Server) getManager(w http.ResponseWriter, _ *http.Request, sys *system) {
	id := sys.spec.Name
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type":     "#Manager.v1_10_0.Manager",
		"@odata.id":       "/redfish/v1/Managers/" + id,
		"Id":              id,
		"Name":            "Virtual BMC for " + id,
		"ManagerType":     "BMC",
		"FirmwareVersion": "metal-vbmc",
		"Status":          map[string]string{"State": "Enabled", "Health": "OK"},
		"VirtualMedia":    link("/redfish/v1/Managers/" + id + "/VirtualMedia"),
		"Links": map[string]any{
			"ManagerForServers":             []map[string]string{link("/redfish/v1/Systems/" + id)},
			"ManagerForServers@odata.count": 1,
			"ManagerForChassis":             []map[string]string{link("/redfish/v1/Chassis/" + id)},
		},
	})
}

func (s *Server) listMedia(w http.ResponseWriter, _ *http.Request, sys *system) {
	base := "/redfish/v1/Managers/" + sys.spec.Name + "/VirtualMedia"
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type": "#VirtualMediaCollection.VirtualMediaCollection",
		"@odata.id":   base, "Name": "Virtual Media Collection",
		"Members": []map[string]string{link(base + "/Cd")}, "Members@odata.count": 1,
	})
}

func (s *Server) getMedia(w http.ResponseWriter, _ *http.Request, sys *system) {
	sys.mu.Lock()
	image := sys.media
	sys.mu.Unlock()
	base := "/redfish/v1/Managers/" + sys.spec.Name + "/VirtualMedia/Cd"
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type":    "#VirtualMedia.v1_3_0.VirtualMedia",
		"@odata.id":      base,
		"Id":             "Cd",
		"Name":           "Virtual CD",
		"MediaTypes":     []string{"CD", "DVD"},
		"Image":          nullIfEmpty(image),
		"Inserted":       image != "",
		"WriteProtected": true,
		"ConnectedVia":   map[bool]string{true: "URI", false: "NotConnected"}[image != ""],
		"Actions": map[string]any{
			"#VirtualMedia.InsertMedia": map[string]string{"target": base + "/Actions/VirtualMedia.InsertMedia"},
			"#VirtualMedia.EjectMedia":  map[string]string{"target": base + "/Actions/VirtualMedia.EjectMedia"},
		},
	})
}

func (s *Server) insertMedia(w http.ResponseWriter, r *http.Request, sys *system) {
	var body struct {
		Image    string `json:"Image"`
		Inserted *bool  `json:"Inserted"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body); err != nil || body.Image == "" {
		redfishError(w, http.StatusBadRequest, "Base.1.8.ActionParameterMissing", "InsertMedia needs an Image URI")
		return
	}
	s.setMedia(w, r, sys, body.Image)
}

func (s *Server) ejectMedia(w http.ResponseWriter, r *http.Request, sys *system) {
	s.setMedia(w, r, sys, "")
}

// patchMedia supports the older style of inserting media, by PATCHing
// Image and Inserted, that some clients still use.
func (s *Server) patchMedia(w http.ResponseWriter, r *http.Request, sys *system) {
	var body struct {
		Image    *string `json:"Image"`
		Inserted *bool   `json:"Inserted"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body); err != nil {
		redfishError(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "the request body is not valid JSON")
		return
	}
	image := ""
	if body.Image != nil {
		image = *body.Image
	}
	if body.Inserted != nil && !*body.Inserted {
		image = ""
	}
	s.setMedia(w, r, sys, image)
}

func (s *Server) setMedia(w http.ResponseWriter, r *http.Request, sys *system, image string) {
	sys.mu.Lock()
	defer sys.mu.Unlock()
	var err error
	if image == "" {
		err = sys.spec.Machine.EjectMedia(r.Context())
	} else {
		err = sys.spec.Machine.InsertMedia(r.Context(), image)
	}
	if err != nil {
		s.machineError(w, sys, "virtual media", err)
		return
	}
	sys.media = image
	s.log.Info("virtual media changed", "machine", sys.spec.Name, "image", image)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) getChassis(w http.ResponseWriter, r *http.Request, sys *system) {
	id := sys.spec.Name
	sys.mu.Lock()
	power, err := sys.spec.Machine.PowerState(r.Context())
	sys.mu.Unlock()
	if err != nil {
		s.machineError(w, sys, "read power state", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type":  "#Chassis.v1_14_0.Chassis",
		"@odata.id":    "/redfish/v1/Chassis/" + id,
		"Id":           id,
		"Name":         id,
		"ChassisType":  "RackMount",
		"Manufacturer": orDefault(sys.spec.Manufacturer, "QEMU"),
		"Model":        orDefault(sys.spec.Model, "Standard PC"),
		"SerialNumber": sys.spec.Serial,
		"PowerState":   string(power),
		"Status":       map[string]string{"State": "Enabled", "Health": "OK"},
		"Power":        link("/redfish/v1/Chassis/" + id + "/Power"),
		"Thermal":      link("/redfish/v1/Chassis/" + id + "/Thermal"),
		"Links": map[string]any{
			"ComputerSystems": []map[string]string{link("/redfish/v1/Systems/" + id)},
			"ManagedBy":       []map[string]string{link("/redfish/v1/Managers/" + id)},
		},
	})
}

func (s *Server) machineError(w http.ResponseWriter, sys *system, what string, err error) {
	s.log.Error("machine operation failed", "machine", sys.spec.Name, "op", what, "err", err)
	status := http.StatusInternalServerError
	if errors.Is(err, ErrNotConfigured) {
		status = http.StatusConflict
	}
	redfishError(w, status, "Base.1.8.GeneralError", fmt.Sprintf("%s failed: %v", what, err))
}

func link(path string) map[string]string { return map[string]string{"@odata.id": path} }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func redfishError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{
		"error": map[string]any{
			"code":    code,
			"message": msg,
			"@Message.ExtendedInfo": []map[string]any{{
				"@odata.type": "#Message.v1_1_1.Message",
				"MessageId":   code,
				"Message":     msg,
				"Severity":    "Warning",
			}},
		},
	})
}
