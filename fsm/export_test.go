package fsm

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// An export restores into an empty state machine as the same state: the
// digest and applied index Export announced, equal to the source's, and
// the same bytes as a Raft snapshot of that state.
func TestExportRestoresAsTheStateItAnnounced(t *testing.T) {
	h := newHarness(t)
	fillState(h, 50)
	var buf bytes.Buffer
	var applied uint64
	var digest string
	err := h.f.Export(&buf, func(a uint64, d string) error {
		applied, digest = a, d
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if applied != h.f.AppliedIndex() || digest != h.digest() {
		t.Fatalf("announced index %d digest %s; the state is at %d with %s", applied, digest, h.f.AppliedIndex(), h.digest())
	}
	if !bytes.Equal(buf.Bytes(), persisted(t, h.f)) {
		t.Fatal("an export differs from a snapshot of the same state")
	}
	fresh := newHarness(t)
	if err := fresh.f.Restore(io.NopCloser(bytes.NewReader(buf.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if fresh.digest() != digest || fresh.f.AppliedIndex() != applied {
		t.Fatalf("restored digest %s at %d, want %s at %d", fresh.digest(), fresh.f.AppliedIndex(), digest, applied)
	}
	// Entries applied after the cut are not in it.
	h.apply(appendCmd("t0", "after", "", 1<<40))
	if h.digest() == digest {
		t.Fatal("the test's later append changed nothing")
	}
}

func TestExportStopsOnBeginsError(t *testing.T) {
	h := newHarness(t)
	fillState(h, 3)
	stop := errors.New("stop")
	var buf bytes.Buffer
	if err := h.f.Export(&buf, func(uint64, string) error { return stop }); !errors.Is(err, stop) || buf.Len() != 0 {
		t.Fatalf("Export = %v with %d bytes written, want begin's error and nothing", err, buf.Len())
	}
}
