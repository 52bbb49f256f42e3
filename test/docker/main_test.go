// Package docker tests the image (Dockerfile, scripts/docker-build.sh) and
// deploy/compose.yaml for real: a three-node TLS cluster in containers,
// driven from the host through the syncctl binary, with a node killed and
// restarted. It skips, saying why, where Docker or docker-compose is not
// there, or when SYNCSTORE_DOCKER_TEST=0.
package docker

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// repoRoot is the module root, two levels above this file.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller information")
	}
	root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	if _, err := os.Stat(filepath.Join(root, "deploy", "compose.yaml")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	return root
}
