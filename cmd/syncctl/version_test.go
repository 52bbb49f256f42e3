package main

import (
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/syncstore/syncstore/internal/version"
)

// TestVersion: syncctl version prints the build line, or its fields as
// JSON, without a cluster (the address refuses connections).
func TestVersion(t *testing.T) {
	out, err := run(t, "127.0.0.1:1", "version")
	if want := version.Get().String("syncctl") + "\n"; err != nil || out != want {
		t.Fatalf("version: %q, %v; want %q", out, err, want)
	}
	out, err = run(t, "127.0.0.1:1", "version", "--json")
	var v versionJSON
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || v.Program != "syncctl" || v.GoVersion != runtime.Version() || v.Version == "" {
		t.Fatalf("version --json: %q, %v: %+v", out, err, v)
	}
	if !strings.Contains(out, `"go_version"`) {
		t.Fatalf("version --json lacks go_version: %s", out)
	}
	if _, err := run(t, "127.0.0.1:1", "version", "extra"); !errors.As(err, new(usageError)) {
		t.Fatalf("version extra: %v; want a usage error", err)
	}
}
