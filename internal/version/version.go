// Package version says which build a binary is: the module version, the VCS
// revision and time Go stamps into every binary built from a checkout, and
// the Go version. Release builds may override Version with
// -ldflags "-X github.com/syncstore/syncstore/internal/version.Version=v1.2.3".
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release this binary was built as; "" takes the module's.
var Version = ""

// Info is what a binary knows of its build.
type Info struct {
	Version   string // release or module version ("(devel)" from a checkout)
	Revision  string // VCS commit, "" when built outside a checkout
	Time      string // commit time (RFC 3339), "" when unknown
	Modified  bool   // built from a checkout with uncommitted changes
	GoVersion string
}

// Get reads the build information of the running binary.
func Get() Info {
	info := Info{Version: Version, GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		if info.Version == "" {
			info.Version = "unknown"
		}
		return info
	}
	if info.Version == "" {
		info.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// String is one line for --version: "syncd v1.2.3 (abc1234, 2026-12-01T10:00:00Z) go1.26.8".
func (i Info) String(program string) string {
	rev := i.Revision
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev == "" {
		rev = "no vcs info"
	}
	if i.Modified {
		rev += "+dirty"
	}
	if i.Time != "" {
		rev += ", " + i.Time
	}
	return fmt.Sprintf("%s %s (%s) %s", program, i.Version, rev, i.GoVersion)
}
