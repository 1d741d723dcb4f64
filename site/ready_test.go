package site

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseReadiness(t *testing.T) {
	tests := map[string]struct {
		in      string
		want    Readiness
		wantErr bool
	}{
		"default":       {in: "", want: Readiness{Kind: ReadyCloudInit}},
		"cloud-init":    {in: "cloud-init", want: Readiness{Kind: ReadyCloudInit}},
		"none":          {in: "none", want: Readiness{Kind: ReadyNone}},
		"tcp":           {in: "tcp:22", want: Readiness{Kind: ReadyTCP, Port: 22}},
		"http":          {in: "http://:8080/healthz?x=1", want: Readiness{Kind: ReadyHTTP, Scheme: "http", Port: 8080, Path: "/healthz?x=1"}},
		"https default": {in: "https:///ready", want: Readiness{Kind: ReadyHTTP, Scheme: "https", Port: 443, Path: "/ready"}},
		"tcp no port":   {in: "tcp:", wantErr: true},
		"tcp too big":   {in: "tcp:70000", wantErr: true},
		"http host":     {in: "http://example.net/", wantErr: true},
		"unknown":       {in: "ssh", wantErr: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseReadiness(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseReadiness(%q) error %v, want error %v", tt.in, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseReadiness(%q) (-want +got):\n%s", tt.in, diff)
			}
			if err == nil && tt.in != "" {
				if again, _ := ParseReadiness(got.String()); again != got {
					t.Errorf("%q reads back as %+v", got.String(), again)
				}
			}
		})
	}
}
