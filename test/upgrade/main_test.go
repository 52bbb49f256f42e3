// Package upgrade runs a rolling upgrade with real syncd processes: a
// release build (A) and a test build (B, tag syncstore_upgrade_test) that
// supports one cluster version more and adds a command kind.
package upgrade

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// binA and binB are the two syncd builds, made once.
var binA, binB string

func build(dir, name string, tags ...string) (string, error) {
	bin := filepath.Join(dir, name)
	args := []string{"build", "-o", bin}
	if len(tags) > 0 {
		args = append(args, "-tags", tags[0])
	}
	out, err := exec.Command("go", append(args, "github.com/syncstore/syncstore/cmd/syncd")...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go %v: %v\n%s", args, err, out)
	}
	return bin, nil
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "syncstore-upgrade-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if binA, err = build(dir, "syncd-a"); err == nil {
		binB, err = build(dir, "syncd-b", "syncstore_upgrade_test")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := 0
	func() {
		defer os.RemoveAll(dir)
		code = m.Run()
	}()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
