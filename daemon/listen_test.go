package daemon_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/converge/apply/applytest"
	"github.com/metal-dev/metal/daemon"
	"github.com/metal-dev/metal/site"
)

// selfSigned writes a certificate for 127.0.0.1 and its key as PEM files
// and returns their paths and a pool that trusts it.
func selfSigned(t *testing.T) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "metal test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath, keyPath = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certPath, keyPath, pool
}

// TestAPIListenTLS: with --api-listen and a certificate, the console, API
// and metrics answer over HTTPS on their own listener, to a client that
// checks the certificate; the netboot listener keeps serving boot files in
// plain HTTP and no longer serves the API, console or metrics.
func TestAPIListenTLS(t *testing.T) {
	certPath, keyPath, pool := selfSigned(t)
	apiAddr := freeAddr(t)
	l := newFleetLab(t, labOptions{edit: func(o *daemon.Options) {
		o.API = daemon.APIListen{Addr: apiAddr, TLSCert: certPath, TLSKey: keyPath}
	}})
	apiURL := "https://" + apiAddr
	client := &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
		// The console answers a login with a redirect; keep it to look at.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	t.Cleanup(client.CloseIdleConnections)
	waitTLS(t, client, apiURL+"/api/v1/openapi.yaml")

	// The API over TLS, with the token: who am I, and a real action.
	code, body := l.call(client, apiURL, http.MethodGet, "/api/v1/whoami", l.token, nil)
	if code != http.StatusOK || body["token"] != "ops" {
		t.Fatalf("whoami over TLS: HTTP %d %v", code, body)
	}
	m0 := applytest.Name(0)
	boots := len(l.fleet.Sim(m0).Boots())
	req := `{"action":"power-cycle","machine":"` + m0 + `"}`
	code, body = l.call(client, apiURL, http.MethodPost, "/api/v1/actions", l.token, []byte(req))
	if code != http.StatusOK || len(l.fleet.Sim(m0).Boots()) != boots+1 {
		t.Errorf("power cycle over TLS: HTTP %d %v, %d starts (had %d)", code, body, len(l.fleet.Sim(m0).Boots()), boots)
	}
	code, _ = l.call(client, apiURL, http.MethodPost, "/api/v1/actions", "", []byte(req))
	if code != http.StatusUnauthorized {
		t.Errorf("action over TLS without a token: HTTP %d, want 401", code)
	}

	// The console's login over TLS sets a Secure cookie.
	resp, err := client.PostForm(apiURL+"/console/login", url.Values{"token": {l.token}, "next": {"/console/"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) == 0 || !resp.Cookies()[0].Secure {
		t.Errorf("console login over TLS: HTTP %d, cookies %v; want a redirect and a Secure cookie", resp.StatusCode, resp.Header["Set-Cookie"])
	}
	// Metrics are there too, and count the API's requests.
	if m := get(t, client, apiURL+"/metrics"); !strings.Contains(m, `metal_http_requests_total{code="2xx",route="api"}`) {
		t.Errorf("metrics on the API listener lack the API's requests:\n%s", m)
	}

	// It is real TLS: a client that does not trust the certificate is
	// refused by its own check, and plain HTTP gets no API.
	_, err = http.Get(apiURL + "/api/v1/whoami")
	var unknownCA x509.UnknownAuthorityError
	if !errors.As(err, &unknownCA) {
		t.Errorf("a client without the certificate: %v, want an unknown authority error", err)
	}
	if code, _ := l.call(http.DefaultClient, "http://"+apiAddr, http.MethodGet, "/api/v1/whoami", l.token, nil); code == http.StatusOK {
		t.Errorf("plain HTTP to the TLS listener answered the API")
	}

	// The netboot listener: boot scripts in plain HTTP, and nothing of
	// the console, API or metrics.
	if s := get(t, http.DefaultClient, l.base+"/ipxe/boot.ipxe"); !strings.HasPrefix(s, "#!ipxe") {
		t.Errorf("boot script on the netboot listener: %q", s)
	}
	for _, p := range []string{"/api/v1/whoami", "/api/v1/openapi.yaml", "/console/", "/console/login", "/metrics"} {
		if code, _ := l.call(http.DefaultClient, l.base, http.MethodGet, p, l.token, nil); code != http.StatusNotFound {
			t.Errorf("netboot listener GET %s: HTTP %d, want 404", p, code)
		}
	}
	if code, _ := l.call(http.DefaultClient, l.base, http.MethodPost, "/api/v1/actions", l.token, []byte(req)); code != http.StatusNotFound && code != http.StatusMethodNotAllowed {
		t.Errorf("netboot listener POST /api/v1/actions: HTTP %d, want 404 or 405", code)
	}
}

// TestAPIListenPlain: --api-listen without TLS moves the API to loopback
// in plain HTTP, and the root leads to the console.
func TestAPIListenPlain(t *testing.T) {
	apiAddr := freeAddr(t)
	l := newFleetLab(t, labOptions{edit: func(o *daemon.Options) { o.API = daemon.APIListen{Addr: apiAddr} }})
	apiURL := "http://" + apiAddr
	l.waitHTTP(apiURL + "/api/v1/openapi.yaml")
	if code, body := l.call(http.DefaultClient, apiURL, http.MethodGet, "/api/v1/whoami", l.token, nil); code != http.StatusOK || body["token"] != "ops" {
		t.Errorf("whoami: HTTP %d %v", code, body)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(apiURL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/" {
		t.Errorf("root: HTTP %d to %q, want a redirect to the console", resp.StatusCode, resp.Header.Get("Location"))
	}
	if code, _ := l.call(http.DefaultClient, l.base, http.MethodGet, "/api/v1/whoami", l.token, nil); code != http.StatusNotFound {
		t.Errorf("netboot listener still serves the API: HTTP %d", code)
	}
	if code, _ := l.call(http.DefaultClient, apiURL, http.MethodGet, "/ipxe/boot.ipxe", "", nil); code != http.StatusNotFound {
		t.Errorf("the API listener serves boot scripts: HTTP %d", code)
	}
	// The netboot listener's root says where the console, API and
	// metrics went.
	if s := get(t, http.DefaultClient, l.base+"/"); !strings.Contains(s, "Console: "+apiURL+"/console/") || !strings.Contains(s, apiURL+"/metrics") {
		t.Errorf("netboot listener root: %q", s)
	}
}

// TestAPIOffBootListener: by default (no --api-listen, no
// --api-on-boot-network) the netboot listener serves no API, console or
// metrics, so no token or cookie is ever sent to it; its root says so.
func TestAPIOffBootListener(t *testing.T) {
	l := newFleetLab(t, labOptions{edit: func(o *daemon.Options) { o.API = daemon.APIListen{} }})
	l.waitHTTP(l.base + "/ipxe/boot.ipxe")
	for _, path := range []string{"/api/v1/whoami", "/api/v1/machines", "/console/", "/console/login", "/metrics"} {
		if code, _ := l.call(http.DefaultClient, l.base, http.MethodGet, path, l.token, nil); code != http.StatusNotFound {
			t.Errorf("netboot listener GET %s: HTTP %d, want 404", path, code)
		}
	}
	if s := get(t, http.DefaultClient, l.base+"/"); !strings.Contains(s, "not on the boot network") {
		t.Errorf("netboot listener root: %q", s)
	}
	if strings.Contains(l.logs.String(), "share the netboot listener") {
		t.Error("warned of a shared listener that is not shared")
	}
}

// TestAPIOnBootNetworkWarns: the old shared listener is still there on
// request, with a warning at start.
func TestAPIOnBootNetworkWarns(t *testing.T) {
	l := newFleetLab(t, labOptions{})
	l.waitHTTP(l.base + "/api/v1/openapi.yaml")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(l.logs.String(), "share the netboot listener (--api-on-boot-network)") {
		if time.Now().After(deadline) {
			t.Fatal("no warning that the API shares the boot listener")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAPIListenRefusesBadTLS: a daemon whose TLS settings cannot work
// does not start, and says what to change.
func TestAPIListenRefusesBadTLS(t *testing.T) {
	certPath, keyPath, _ := selfSigned(t)
	otherCert, _, _ := selfSigned(t)
	for name, tc := range map[string]struct {
		api  daemon.APIListen
		want string
	}{
		"TLS on the netboot listener": {daemon.APIListen{TLSCert: certPath, TLSKey: keyPath}, "--api-listen"},
		"certificate without key":     {daemon.APIListen{Addr: "127.0.0.1:0", TLSCert: certPath}, "--tls-key"},
		"key without certificate":     {daemon.APIListen{Addr: "127.0.0.1:0", TLSKey: keyPath}, "--tls-cert"},
		"missing certificate":         {daemon.APIListen{Addr: "127.0.0.1:0", TLSCert: certPath + ".gone", TLSKey: keyPath}, "no such file"},
		"key of another certificate":  {daemon.APIListen{Addr: "127.0.0.1:0", TLSCert: otherCert, TLSKey: keyPath}, "does not match"},
		"address without port":        {daemon.APIListen{Addr: "127.0.0.1"}, "HOST:PORT"},
		"shared and apart":            {daemon.APIListen{Addr: "127.0.0.1:0", Shared: true}, "not both"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := newFailingDaemon(t, func(o *daemon.Options) { o.API = tc.api })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("daemon.New: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// newFailingDaemon is daemon.New for a one-machine site with edit applied,
// for tests that expect New to refuse.
func newFailingDaemon(t *testing.T, edit func(*daemon.Options)) (*daemon.Daemon, error) {
	t.Helper()
	dir := t.TempDir()
	s := loadSite(t, dir, `site "s" {
  state = "file://state/state.db"
}
network "lan" {
  subnet = "192.0.2.0/24"
  mode   = "off"
}
machine "m" {
  mac     = "02:00:00:00:00:01"
  network = "lan"
}
`)
	opts := daemon.Options{Site: s, SiteDir: dir, Listen: freeAddr(t), TFTPAddr: "127.0.0.1:0", PowerPoll: -1,
		Agent: daemon.AgentOptions{Disabled: true}}
	edit(&opts)
	d, err := daemon.New(t.Context(), opts)
	if err == nil {
		d.Close()
	}
	return d, err
}

func waitTLS(t *testing.T, c *http.Client, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET %s: HTTP %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// loadSite writes src as dir/site.hcl and loads it.
func loadSite(t *testing.T, dir, src string) *site.Site {
	t.Helper()
	p := filepath.Join(dir, "site.hcl")
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	res, diags := site.LoadFile(p, site.Options{})
	if diags.HasErrors() {
		t.Fatalf("site: %v", diags)
	}
	return res.Site
}
