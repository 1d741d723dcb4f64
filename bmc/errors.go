package bmc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/stmcginnis/gofish/common"
)

// ipmiSessionRefusedWithin separates the two meanings of ipmitool's
// "Unable to establish IPMI v2 / RMCP+ session": a BMC that answers and
// rejects the RAKP handshake (wrong user or password, unsupported cipher
// suite) does so within milliseconds, while one that never answers takes
// ipmitool's whole retransmit cycle (5 s and more).
const ipmiSessionRefusedWithin = 2 * time.Second

// failure is a classified error: what kind it is, what to tell the
// operator, and whether trying again could help.
type failure struct {
	kind  error
	hint  string
	retry bool
	cause error
}

// classify decides what err means. elapsed is how long the failing attempt
// took; addr is the BMC address shown in hints.
func classify(err error, elapsed time.Duration, protocol, addr string) failure {
	f := failure{cause: err}
	msg := strings.ToLower(err.Error())

	var rfErr *common.Error
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var netErr net.Error
	var dnsErr *net.DNSError
	status := 0
	if errors.As(err, &rfErr) {
		status = rfErr.HTTPReturnedStatusCode
		f.cause = fmt.Errorf("HTTP %d %s: %s", status, http.StatusText(status), oneLine(rfErr.Message))
	} else if m := embeddedStatus.FindStringSubmatch(msg); m != nil {
		// gofish reports some failures as text: a failed member of a
		// collection (failed to retrieve some items: [{"link":...,
		// "error":"401: {...}"}]), or a status and the body's JSON that
		// bmclib flattened (provider: gofish: 405: {...}).
		status, _ = strconv.Atoi(m[1])
		detail := ""
		if mm := embeddedMessage.FindStringSubmatch(err.Error()); mm != nil {
			detail = ": " + mm[1]
		}
		f.cause = fmt.Errorf("HTTP %d %s%s", status, http.StatusText(status), detail)
	}

	switch {
	case errors.Is(err, ErrNotRedfish):
		f.kind = ErrNotRedfish
		f.hint = fmt.Sprintf("%s is probably not a Redfish service: check the BMC address and port (its /redfish/v1/ must answer Redfish JSON), or set protocol = \"ipmi\"", addr)
	case errors.As(err, &certErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr),
		strings.Contains(msg, "x509:"), strings.Contains(msg, "tls: failed to verify"):
		f.kind = ErrTLS
		f.hint = "set ca_file to the CA that signed the BMC's certificate, or insecure_tls = true for a lab BMC"
	case status == http.StatusUnauthorized || status == http.StatusForbidden,
		strings.Contains(msg, "insufficient privilege"), strings.Contains(msg, "unauthorized name"):
		f.kind = ErrCredentials
		f.hint = "check the BMC username and password"
	case protocol == ProtocolIPMI && strings.Contains(msg, "unable to establish ipmi v2 / rmcp+ session"):
		if elapsed < ipmiSessionRefusedWithin {
			f.kind = ErrCredentials
			f.hint = "check the BMC username and password, and that the BMC supports the IPMI cipher suite configured"
		} else {
			f.kind = ErrUnreachable
			f.hint = fmt.Sprintf("is the BMC reachable at %s over UDP, with IPMI over LAN enabled?", addr)
			f.retry = true
		}
	case status >= 500:
		f.kind = ErrBMCFailure
		f.hint = "the BMC may be busy or need a reset; retry later or reset the BMC"
		f.retry = true
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, errAttemptTimeout),
		errors.As(err, &netErr) && netErr.Timeout(),
		strings.Contains(msg, "client.timeout exceeded"), strings.Contains(msg, "i/o timeout"),
		strings.Contains(msg, "deadline exceeded"):
		f.kind = ErrTimeout
		f.hint = fmt.Sprintf("is the BMC reachable at %s? it may be hung or overloaded", addr)
		f.retry = true
	case errors.As(err, &dnsErr):
		f.kind = ErrUnreachable
		f.hint = fmt.Sprintf("check the BMC address %s: the name does not resolve", addr)
	case errors.Is(err, syscall.ECONNREFUSED), strings.Contains(msg, "connection refused"):
		f.kind = ErrUnreachable
		f.hint = fmt.Sprintf("is the BMC reachable at %s? nothing is listening on that port", addr)
		f.retry = true
	case errors.Is(err, syscall.ECONNRESET), strings.Contains(msg, "connection reset"),
		strings.Contains(msg, "broken pipe"), strings.Contains(msg, "eof"),
		strings.Contains(msg, "no route to host"), strings.Contains(msg, "network is unreachable"):
		f.kind = ErrUnreachable
		f.hint = fmt.Sprintf("is the BMC reachable at %s?", addr)
		f.retry = true
	case errors.Is(err, ErrUnsupported):
		f.kind = ErrUnsupported
		f.cause = errors.New(strings.TrimPrefix(err.Error(), ErrUnsupported.Error()+": "))
		f.hint = "change this setting by hand on the machine, or remove it from the site file"
	case status == http.StatusNotFound || status == http.StatusMethodNotAllowed || status == http.StatusNotImplemented:
		f.kind = ErrUnsupported
		f.hint = "the BMC does not offer this operation"
	}
	if f.cause == err {
		f.cause = errors.New(oneLine(err.Error()))
	}
	return f
}

// embeddedStatus and embeddedMessage find an HTTP status and the Redfish
// error message inside error text that gofish built from a JSON answer.
var (
	embeddedStatus  = regexp.MustCompile(`(?:^|"error":"|: )([45][0-9][0-9]): \{`)
	embeddedMessage = regexp.MustCompile(`\\?"[Mm]essage\\?":\s*\\?"([^"\\]*)`)
)

// errAttemptTimeout ends an attempt that outlived Config.Timeout, whether
// or not the library underneath noticed.
var errAttemptTimeout = errors.New("no answer within the call timeout")

// oneLine flattens bmclib's multi-line multierror text into one line.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "*"))
		if l == "" || strings.HasSuffix(l, "errors occurred:") || strings.HasSuffix(l, "error occurred:") {
			continue
		}
		parts = append(parts, l)
	}
	s = strings.Join(parts, "; ")
	// Some BMCs answer errors with whole pages; the start says enough.
	const max = 400
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}
