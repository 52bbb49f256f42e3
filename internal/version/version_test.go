package version

import (
	"strings"
	"testing"
)

func TestStringNamesProgramVersionAndGo(t *testing.T) {
	tests := []struct {
		name string
		info Info
		want string
	}{
		{"checkout", Info{Version: "(devel)", Revision: "0123456789abcdef", Time: "2026-12-01T10:00:00Z", GoVersion: "go1.26.8"},
			"syncd (devel) (0123456789ab, 2026-12-01T10:00:00Z) go1.26.8"},
		{"dirty", Info{Version: "v1.0.0", Revision: "abc", Modified: true, GoVersion: "go1.26.8"},
			"syncd v1.0.0 (abc+dirty) go1.26.8"},
		{"no vcs", Info{Version: "v1.0.0", GoVersion: "go1.26.8"}, "syncd v1.0.0 (no vcs info) go1.26.8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.info.String("syncd"); got != tt.want {
				t.Fatalf("String = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestGetOverride(t *testing.T) {
	old := Version
	defer func() { Version = old }()
	Version = "v9.9.9"
	if got := Get(); got.Version != "v9.9.9" || !strings.HasPrefix(got.GoVersion, "go") {
		t.Fatalf("Get = %+v", got)
	}
}
