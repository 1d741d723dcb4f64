package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metal-dev/metal/pxe/pxetest"
)

// echoingBMC answers every request 401 with a body that repeats the
// credentials it was sent, as a careless BMC's error page might: whatever
// metal prints of the answer must still not show them.
func echoingBMC(t *testing.T, ns *pxetest.Netns) string {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp4", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if strings.TrimSuffix(r.URL.Path, "/") == "/redfish/v1" {
			// The service root, unauthenticated as Redfish has it, so
			// the client goes on to log in.
			fmt.Fprint(w, `{"@odata.id":"/redfish/v1/","Id":"RootService","RedfishVersion":"1.6.0",
"Systems":{"@odata.id":"/redfish/v1/Systems"},"SessionService":{"@odata.id":"/redfish/v1/SessionService"},
"Links":{"Sessions":{"@odata.id":"/redfish/v1/SessionService/Sessions"}}}`)
			return
		}
		user, pass, _ := r.BasicAuth()
		body, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
		msg, _ := json.Marshal(fmt.Sprintf("user %s with password %s may not log in; you sent %s", user, pass, body))
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"error":{"code":"Base.1.8.AccessDenied","message":%s}}`, msg)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// authImageServer serves file at /vmlinuz to requests that log in as
// metal with password pass, as a private mirror would.
func authImageServer(t *testing.T, ns *pxetest.Netns, pass, file string) string {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp4", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "metal" || p != pass || r.URL.Path != "/vmlinuz" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, file)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestSecretsNeverLeak runs the real binary's verbs on a site whose BMC
// passwords come from sensitive variables (one from the environment, one
// from a var file): validate, plan (human, JSON, saved), bmc status
// against BMCs that refuse (one echoes the password back), doctor, and a
// short `metal serve` at debug level, then machines and events over the
// store it wrote, the API (with a read token) and the console's pages.
// A third sensitive variable feeds a label, a BMC username, the image's
// kernel URL (its password, against a mirror that needs it) and the
// kernel's cmdline. It greps every output, every log, the saved plan,
// every answer and every byte of the state directory for the secret
// values.
func TestSecretsNeverLeak(t *testing.T) {
	bin := buildMetal(t)
	lab := pxetest.NewLab(t)
	lab.AddHost("m1", pxetest.MAC(1))
	dir := t.TempDir()

	secrets := map[string]string{
		"bmc_password":  "Sx7-env-secret-81aa",
		"ipmi_password": "Sx7-file-secret-92bb",
		"mirror_token":  "Sx7-mirror-secret-73cc",
	}
	refusing := startLabBMC(t, lab.NS(), "web-01", "admin", "the-bmc's-own-pw")
	echo := echoingBMC(t, lab.NS())
	writeFile(t, filepath.Join(dir, "vault.vars"), fmt.Sprintf("ipmi_password = %q\n", secrets["ipmi_password"]))
	const kernel = "a kernel\n"
	mirror := authImageServer(t, lab.NS(), secrets["mirror_token"], kernel)
	kernelSum := sha256.Sum256([]byte(kernel))
	sitePath := filepath.Join(dir, "site.hcl")
	writeFile(t, sitePath, fmt.Sprintf(`
site "secrets" {
  state  = "file://state/state.db"
  listen = "192.0.2.1:8080"
  # no discovery: these tests need no install agent
  unknown_machines = "ignore"
}
variable "bmc_password" { sensitive = true }
variable "ipmi_password" { sensitive = true }
variable "mirror_token" { sensitive = true }
network "lab" {
  interface = %q
  subnet    = "192.0.2.0/24"
  pool      = "192.0.2.100-192.0.2.150"
}
image "live" {
  kernel          = "http://metal:${var.mirror_token}@%s/vmlinuz"
  kernel_checksum = "sha256:%x"
  cmdline         = "console=ttyS0 mirror_key=${var.mirror_token}"
}
machine "web-01" {
  mac    = "02:00:00:00:00:01"
  ip     = "192.0.2.11"
  image  = image.live
  labels = { rack = "r1", owner = "team-${var.mirror_token}" }
  bmc {
    address  = %q
    username = var.mirror_token
    password = var.bmc_password
  }
}
machine "web-02" {
  mac   = "02:00:00:00:00:02"
  ip    = "192.0.2.12"
  image = image.live
  bmc {
    address  = %q
    username = "admin"
    password = var.ipmi_password
  }
}
`, pxetest.BridgeName, mirror, kernelSum, refusing, echo))

	env := append(os.Environ(), "METAL_VAR_bmc_password="+secrets["bmc_password"], "METAL_VAR_mirror_token="+secrets["mirror_token"], "METAL_LOG_LEVEL=debug")
	varFile := []string{"--var-file", filepath.Join(dir, "vault.vars")}
	planFile := filepath.Join(dir, "tonight.plan")
	var seen []string // every output, named
	run := func(wantCode int, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := lab.NS().Command(ctx, bin, append(args, varFile...)...)
		cmd.Dir, cmd.Env = dir, env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if code := cmd.ProcessState.ExitCode(); code != wantCode {
			t.Errorf("metal %s: exit %d (%v), want %d:\n%s", strings.Join(args, " "), code, err, wantCode, out.String())
		}
		seen = append(seen, fmt.Sprintf("metal %s:\n%s", strings.Join(args, " "), out.String()))
		return out.String()
	}

	run(0, "validate", sitePath)
	run(0, "validate", "--json", sitePath)
	run(0, "plan", sitePath)
	run(0, "plan", "--json", sitePath)
	run(0, "plan", "-out", planFile, sitePath)
	status := run(1, "bmc", "status", "--site", sitePath, "--timeout", "10s")
	run(1, "bmc", "status", "--json", "--site", sitePath, "--timeout", "10s")
	run(1, "doctor", "--bmc-timeout", "10s", sitePath)
	run(1, "doctor", "--json", "--bmc-timeout", "10s", sitePath)
	// The checks above must have exercised the refusals, or grepping their
	// output proves nothing.
	if !strings.Contains(status, "refused the credentials") || !strings.Contains(status, "you sent") || strings.Count(status, "FAILED") != 2 {
		t.Errorf("bmc status did not meet two refusing BMCs:\n%s", status)
	}

	// A short serve at debug level, its whole log kept. Start passes this
	// process's environment on.
	t.Setenv("METAL_VAR_bmc_password", secrets["bmc_password"])
	t.Setenv("METAL_VAR_mirror_token", secrets["mirror_token"])
	proc := lab.NS().Start("sh", "-c", fmt.Sprintf("cd %s && exec %s serve --log-level debug %s site.hcl", dir, bin, strings.Join(varFile, " ")))
	waitListening(t, lab.NS(), "192.0.2.1:8080", proc)
	waitListening(t, lab.NS(), "127.0.0.1:9090", proc)

	// The API and the console, read with a read token while serve runs.
	token, _, _ := strings.Cut(run(0, "token", "create", "--site", sitePath, "--role", "read", "--name", "auditor"), "\n")
	if !strings.HasPrefix(token, "metal_") {
		t.Fatalf("no token: %q", token)
	}
	get := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := lab.NS().Command(ctx, "curl", append([]string{"-sS", "--fail-with-body"}, args...)...).CombinedOutput()
		if err != nil {
			t.Errorf("curl %v: %v\n%s", args, err, out)
		}
		seen = append(seen, fmt.Sprintf("curl %s:\n%s", strings.Join(args, " "), out))
		return string(out)
	}
	api := "http://127.0.0.1:9090/api/v1/"
	bearer := "Authorization: Bearer " + token
	for _, path := range []string{"machines", "machines/web-01", "plan", "events", "runs"} {
		get("-H", bearer, api+path)
	}
	if m := get("-H", bearer, api+"machines/web-01"); !strings.Contains(m, `"owner": "(sensitive)"`) {
		t.Errorf("the API does not show the sensitive label as hidden:\n%s", m)
	}
	if p := get("-H", bearer, api+"plan"); !strings.Contains(p, `"sensitive": true`) {
		t.Errorf("the API's plan marks nothing sensitive:\n%s", p)
	}
	jar := filepath.Join(dir, "cookies")
	get("-c", jar, "-d", "token="+token, "-d", "next=/console/", "http://127.0.0.1:9090/console/login")
	for _, page := range []string{"", "plan", "rollout"} {
		get("-b", jar, "http://127.0.0.1:9090/console/"+page)
	}
	if page := get("-b", jar, "http://127.0.0.1:9090/console/machines/web-01"); !strings.Contains(page, "(sensitive)") {
		t.Errorf("the console's machine page does not show the sensitive label hidden (logged in?):\n%s", page)
	}
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-proc.Done()
	seen = append(seen, "metal serve log:\n"+proc.Log())
	if !strings.Contains(proc.Log(), "metal serving") {
		t.Errorf("serve did not serve:\n%s", proc.Log())
	}
	run(0, "machines", "--site", sitePath)
	run(0, "events", "--json", "--site", sitePath, "--last", "0")

	// Every byte of the plan file and the state directory.
	files := []string{planFile}
	stateDB := ""
	if err := filepath.WalkDir(filepath.Join(dir, "state"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
			if d.Name() == "state.db" {
				stateDB = p
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, p+":\n"+string(b))
	}
	if b, _ := os.ReadFile(stateDB); !bytes.Contains(b, []byte("web-02")) {
		t.Errorf("the state store %q does not hold the site's machines: grepping it proves nothing", stateDB)
	}

	for _, out := range seen {
		name, _, _ := strings.Cut(out, "\n")
		for varName, secret := range secrets {
			if strings.Contains(out, secret) {
				t.Errorf("%s shows the value of sensitive variable %s", name, varName)
			}
		}
	}
	if t.Failed() {
		t.Logf("outputs:\n%s", strings.Join(seen, "\n"))
	}
}
