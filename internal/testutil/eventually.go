// Package testutil holds helpers shared by tests.
package testutil

import (
	"testing"
	"time"
)

// Eventually polls cond until it returns nil or timeout passes, then fails
// the test with cond's last error. It is how tests wait: never a bare sleep.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		<-tick.C
	}
}
