package client

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestDocumentedDefaults: the package documentation states the defaults
// the code has.
func TestDocumentedDefaults(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	def := DefaultOptions()
	for _, want := range []string{
		fmt.Sprintf("Options.AttemptTimeout (default %v)", def.AttemptTimeout),
		fmt.Sprintf("Options.MinBackoff (default %v)", def.MinBackoff),
		fmt.Sprintf("Options.MaxBackoff (default %v)", def.MaxBackoff),
		fmt.Sprintf("waits from %v, doubling up to %v", subMinBackoff, subMaxBackoff),
		fmt.Sprintf("StreamSilence, default %v", defaultStreamSilence),
		"at most once\n// a second",
	} {
		if !strings.Contains(string(doc), want) {
			t.Errorf("doc.go does not say %q", want)
		}
	}
	if routesRetry.String() != "1s" {
		t.Errorf("doc.go says the shard map is asked for at most once a second; routesRetry is %v", routesRetry)
	}
}
