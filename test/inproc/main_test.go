// Package inproc runs whole clusters (nodes, gRPC servers, the Go client)
// inside the test process over real TCP on 127.0.0.1 and injects faults.
package inproc

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
