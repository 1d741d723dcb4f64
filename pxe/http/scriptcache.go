package http

import (
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"

	"github.com/metal-dev/metal/pxe"
)

// maxCachedScripts bounds the cache: MACs come from request paths, so a
// client inventing MACs must not grow it without end.
const maxCachedScripts = 8192

// scriptCache keeps each MAC's last rendered script with what it was
// rendered from. Rendering is a pure function of the intent, the machine's
// name and the server's base URL (fixed per server), so a script is reused
// exactly while the policy answers the same intent and name: a change of
// the machine's record shows in the next request.
type scriptCache struct {
	mu sync.RWMutex
	m  map[string]cachedScript
}

type cachedScript struct {
	intent pxe.Intent
	name   string
	base   *url.URL
	script script
}

// script is a rendered script with its Content-Length header value, both
// built once: formatting the length was an allocation per request. A
// script net/http holds whole until the handler returns (nearly all)
// has no such value: net/http then writes the length itself, without a
// header in the handler's map, which it copies on every response.
type script struct {
	body   []byte
	length []string // nil: net/http writes the length
}

// heldWhole is how much of a response body net/http holds before it
// sends the header (its bufferBeforeChunkingSize): a longer one needs a
// Content-Length of the handler's, or it is sent chunked.
const heldWhole = 2048

func newScript(body []byte) script {
	sc := script{body: body}
	if len(body) > heldWhole {
		sc.length = []string{strconv.Itoa(len(body))}
	}
	return sc
}

// sameIntent compares intents field by field (TestSameIntentSeesEveryField
// fails when pxe.Intent gains a field this does not compare).
func sameIntent(a, b pxe.Intent) bool {
	return a.Action == b.Action && a.Kernel == b.Kernel && a.Cmdline == b.Cmdline &&
		a.Token == b.Token && a.AgentSecret == b.AgentSecret && a.Spent == b.Spent &&
		slices.Equal(a.Initrd, b.Initrd)
}

// sameBase: the server's own BaseURL (the same pointer, on the common
// path) or an equal one built for a request over IPv6.
func sameBase(a, b *url.URL) bool {
	return a == b || (a != nil && b != nil && *a == *b)
}

func (c *scriptCache) get(mac net.HardwareAddr, in pxe.Intent, name string, base *url.URL) (script, bool) {
	c.mu.RLock()
	e, ok := c.m[string(mac)]
	c.mu.RUnlock()
	if !ok || e.name != name || !sameBase(e.base, base) || !sameIntent(e.intent, in) {
		return script{}, false
	}
	return e.script, true
}

// put caches body as mac's script and returns it ready to serve.
func (c *scriptCache) put(mac net.HardwareAddr, in pxe.Intent, name string, base *url.URL, body []byte) script {
	sc := newScript(body)
	in.Initrd = slices.Clone(in.Initrd)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedScripts {
		// Dropping everything is crude but rare (more distinct MACs than
		// a site has machines) and keeps the common path free of
		// bookkeeping.
		c.m = make(map[string]cachedScript)
	}
	c.m[string(mac)] = cachedScript{intent: in, name: name, base: base, script: sc}
	return sc
}
