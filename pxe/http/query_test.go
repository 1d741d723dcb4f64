package http

import (
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestQueryValueIsQueryGet: the script handler reads its token with
// queryValue, which must answer as url.Query().Get does.
func TestQueryValueIsQueryGet(t *testing.T) {
	queries := map[string]string{
		"none":              "",
		"token":             "token=abc",
		"second":            "a=1&token=abc",
		"first of two":      "token=one&token=two",
		"empty":             "token=",
		"no value":          "token",
		"escaped":           "token=a%2Fb+c",
		"escaped key":       "%74oken=abc",
		"bad escape":        "token=%zz&token=ok",
		"bad key escape":    "%zz=1&token=ok",
		"semicolon":         "token=a;b&token=ok",
		"semicolon only":    "a=1;token=abc",
		"empty pairs":       "&&token=abc&",
		"prefix of the key": "tokens=x&token2=y",
		"long":              strings.Repeat("a=1&", 300) + "token=abc",
		"too many":          strings.Repeat("&", 20000) + "token=abc",
	}
	for name, q := range queries {
		u := &url.URL{RawQuery: q}
		if diff := cmp.Diff(u.Query().Get("token"), queryValue(q, "token")); diff != "" {
			t.Errorf("%s: %q (-Query().Get +queryValue):\n%s", name, q, diff)
		}
	}
}
