package security

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/syncstore/syncstore/internal/testproc"
)

// syncdBin is the syncd binary the tests run, built once.
var syncdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "syncstore-security-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	syncdBin, err = testproc.Build(dir, "github.com/syncstore/syncstore/cmd/syncd")
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
