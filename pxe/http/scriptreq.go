package http

import (
	"bytes"
)

// scriptRequest is a request the script connections answer themselves,
// HTTP/1.1, kept alive, without a body: GET or HEAD of ScriptPrefix + one
// segment of MAC characters, or a plain GET of a file under filesPrefix
// or imagesPrefix (file set), whole and unconditional.
type scriptRequest struct {
	head bool
	// file is set for a file's GET; images when it is under imagesPrefix
	// (Config.Images), not filesPrefix (Config.Files); name is the file's
	// path below the prefix.
	file, images bool
	name         []byte
	// target is the request's target, path and query, as it came; the
	// path is target[:pathLen], the raw query what follows its '?'.
	target  []byte
	pathLen int
}

// parsed is what parseScriptRequest made of the bytes it was given.
type parsed int

const (
	// needMore: no whole request yet, and nothing refused so far.
	needMore parsed = iota
	// isScript: a script request, of the length returned.
	isScript
	// notScript: anything else, well-formed or not; net/http answers it.
	notScript
)

// The longest MAC segment the fast path takes: a 20-byte InfiniBand
// address, 59 characters with its separators.
const maxMACText = 59

// parseScriptRequest reads the request at the start of b. It says
// isScript only for a request that net/http would read as the same GET
// or HEAD of the same path and query, with a single valid Host, kept
// alive, without a body, and whose path net/http's mux routes to the
// script handler unchanged; anything it is not sure of is notScript, so
// that net/http answers it exactly as it always did (a 400 included).
// It looks at whole lines only: a request cut short is needMore until
// its end comes, however the rest will look.
func parseScriptRequest(b []byte) (req scriptRequest, n int, res parsed) {
	line, rest, res := cutLine(b)
	if res != isScript {
		return req, 0, res
	}
	switch {
	case bytes.HasPrefix(line, []byte("GET ")):
		line = line[4:]
	case bytes.HasPrefix(line, []byte("HEAD ")):
		req.head = true
		line = line[5:]
	default:
		return req, 0, notScript
	}
	target, proto, ok := bytes.Cut(line, []byte{' '})
	if !ok || string(proto) != "HTTP/1.1" {
		return req, 0, notScript
	}
	if !bytes.HasPrefix(target, []byte(ScriptPrefix)) {
		return parseFileRequest(req, b, target, rest)
	}
	path, query, _ := bytes.Cut(target, []byte{'?'})
	mac := path[len(ScriptPrefix):]
	// MAC characters only: no escapes, slashes or dot segments that the
	// mux would clean first, and never "boot.ipxe", the chain script.
	if len(mac) == 0 || len(mac) > maxMACText || !allIn(mac, &macChars) ||
		string(mac) == "." || string(mac) == ".." || !allIn(query, &queryChars) {
		return req, 0, notScript
	}
	req.target, req.pathLen = target, len(path)
	return parseHeaders(req, b, rest)
}

// parseFileRequest goes on with a GET whose target is not a script's:
// isScript only for a file under filesPrefix or imagesPrefix whose path
// the mux routes unchanged (no query, escape, empty or dot segment) and
// whose headers ask for nothing but the whole file (no range, no
// condition). Anything else is net/http's.
func parseFileRequest(req scriptRequest, b, target, rest []byte) (scriptRequest, int, parsed) {
	name, ok := bytes.CutPrefix(target, []byte(filesPrefix))
	if !ok {
		name, ok = bytes.CutPrefix(target, []byte(imagesPrefix))
		req.images = ok
	}
	if !ok || req.head || !cleanFilePath(name) {
		return req, 0, notScript
	}
	req.file, req.name, req.target, req.pathLen = true, name, target, len(target)
	return parseHeaders(req, b, rest)
}

// cleanFilePath says whether name is one or more segments of fileChars
// between single slashes, none of them "." or "..": a path the mux takes
// as it is, that bootfiles.Root then opens or refuses.
func cleanFilePath(name []byte) bool {
	if len(name) == 0 || !allIn(name, &fileChars) {
		return false
	}
	for seg := range bytes.SplitSeq(name, []byte{'/'}) {
		if len(seg) == 0 || string(seg) == "." || string(seg) == ".." {
			return false
		}
	}
	return true
}

// parseHeaders reads the header lines in rest, after the request line of
// req; b is where the request starts, for its length.
func parseHeaders(req scriptRequest, b, rest []byte) (scriptRequest, int, parsed) {
	var line []byte
	var res parsed
	hosts := 0
	for {
		line, rest, res = cutLine(rest)
		if res != isScript {
			return req, 0, res
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok || len(name) == 0 || !allIn(name, &tokenChars) {
			return req, 0, notScript
		}
		value = bytes.Trim(value, " \t")
		if !allIn(value, &valueChars) {
			return req, 0, notScript
		}
		switch {
		case asciiEqualFold(name, "Host"):
			hosts++
			if !allIn(value, &hostChars) {
				return req, 0, notScript
			}
		case asciiEqualFold(name, "Connection"):
			// Only the default of HTTP/1.1 said aloud: a close (or
			// anything with a meaning) goes to net/http.
			if !asciiEqualFold(value, "keep-alive") {
				return req, 0, notScript
			}
		case asciiEqualFold(name, "Content-Length"), asciiEqualFold(name, "Transfer-Encoding"),
			asciiEqualFold(name, "Expect"), asciiEqualFold(name, "Upgrade"), asciiEqualFold(name, "Trailer"):
			return req, 0, notScript
		case req.file && (asciiEqualFold(name, "Range") || len(name) > 3 && asciiEqualFold(name[:3], "If-")):
			// A part of a file, or an answer that depends on its
			// version: http.ServeContent's to work out.
			return req, 0, notScript
		}
	}
	// net/http refuses an HTTP/1.1 request with no Host or with several.
	if hosts != 1 {
		return req, 0, notScript
	}
	return req, len(b) - len(rest), isScript
}

// cutLine cuts the line at the start of b, ended by CRLF: isScript with
// the line (without its CRLF) and what follows it, needMore when b holds
// no line end yet, notScript for a line ended by a bare LF.
func cutLine(b []byte) (line, rest []byte, res parsed) {
	i := bytes.IndexByte(b, '\n')
	switch {
	case i < 0:
		return nil, nil, needMore
	case i == 0 || b[i-1] != '\r':
		return nil, nil, notScript
	}
	return b[:i-1], b[i+1:], isScript
}

// asciiEqualFold is strings.EqualFold for ASCII, without converting b.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c, d := b[i], s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}

// byteSet is a set of bytes, indexed by byte.
type byteSet [256]bool

func allIn(b []byte, set *byteSet) bool {
	for _, c := range b {
		if !set[c] {
			return false
		}
	}
	return true
}

func newByteSet(ranges ...string) (s byteSet) {
	for _, r := range ranges {
		if len(r) == 3 && r[1] == '-' {
			for c := int(r[0]); c <= int(r[2]); c++ {
				s[c] = true
			}
			continue
		}
		for i := range len(r) {
			s[r[i]] = true
		}
	}
	return s
}

var (
	// macChars are what net.ParseMAC reads: hex digits and the three
	// separators. Neither '/' nor '%' is one.
	macChars = newByteSet("0-9", "a-f", "A-F", ":.-")
	// queryChars are the printable ASCII bytes: net/http takes a query
	// as it is, and the script handler unescapes it itself.
	queryChars = newByteSet("!-~")
	// tokenChars name a header field (RFC 9110's tchar).
	tokenChars = newByteSet("0-9", "a-z", "A-Z", "!#$%&'*+-.^_`|~")
	// valueChars are a field value's bytes: printable ASCII, space and
	// tab. net/http takes more (bytes from 0x80 up); those go to it.
	valueChars = newByteSet(" -~", "\t")
	// hostChars are those of a host name, an IPv4 or a bracketed IPv6
	// address and a port: every one valid in net/http's eyes.
	hostChars = newByteSet("0-9", "a-z", "A-Z", ".-:[]_")
	// fileChars are those of a file path taken as it is: unreserved
	// characters (RFC 3986) and '/'; no '%', so nothing is unescaped,
	// and no '?' or '#'.
	fileChars = newByteSet("0-9", "a-z", "A-Z", "-._~/")
)
