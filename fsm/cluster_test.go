package fsm

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

func setClusterIDCmd(id, expected string) *fsmpb.Command {
	return &fsmpb.Command{Op: &fsmpb.Command_SetClusterId{SetClusterId: &fsmpb.SetClusterID{ClusterId: id, Expected: expected}}}
}

func TestSetClusterIDIsACompareAndSet(t *testing.T) {
	h := newHarness(t)
	if id, err := h.f.ClusterID(); id != "" || err != nil {
		t.Fatalf("a new state has cluster id %q, %v", id, err)
	}
	steps := []struct {
		name    string
		cmd     *fsmpb.Command
		wantErr error
		wantID  string
	}{
		{"first id", setClusterIDCmd("c0ffee", ""), nil, "c0ffee"},
		{"stale expectation", setClusterIDCmd("other", ""), ErrClusterIDConflict, "c0ffee"},
		{"wrong expectation", setClusterIDCmd("other", "beef"), ErrClusterIDConflict, "c0ffee"},
		{"empty id", setClusterIDCmd("", "c0ffee"), ErrInvalidArgument, "c0ffee"},
		{"id with a space", setClusterIDCmd("a b", "c0ffee"), ErrInvalidArgument, "c0ffee"},
		{"id too long", setClusterIDCmd(strings.Repeat("a", MaxClusterIDBytes+1), "c0ffee"), ErrInvalidArgument, "c0ffee"},
		{"replaced (a restore)", setClusterIDCmd("restored-1", "c0ffee"), nil, "restored-1"},
	}
	for _, s := range steps {
		before := h.digest()
		r := h.apply(s.cmd)[0]
		if !errors.Is(r.Err, s.wantErr) || (s.wantErr == nil && r.Err != nil) {
			t.Fatalf("%s: got %v, want %v", s.name, r.Err, s.wantErr)
		}
		if s.wantErr != nil && h.digest() != before {
			t.Fatalf("%s: a refused command changed the state", s.name)
		}
		if id, err := h.f.ClusterID(); err != nil || id != s.wantID {
			t.Fatalf("%s: stored id %q, %v; want %q", s.name, id, err, s.wantID)
		}
	}
	if h.replayInBatches(3) != h.digest() {
		t.Fatal("a replay in other batches stores another state")
	}
}

// The id is part of the replicated state: a snapshot carries it to a
// replica that installs it.
func TestClusterIDTravelsInSnapshots(t *testing.T) {
	src := newHarness(t)
	src.apply(setClusterIDCmd("c0ffee", ""))
	snap, err := src.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	dst := newHarness(t)
	if err := dst.f.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	if id, err := dst.f.ClusterID(); err != nil || id != "c0ffee" {
		t.Fatalf("restored cluster id %q, %v", id, err)
	}
}

func TestValidateClusterID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"0123456789abcdef0123456789abcdef", true},
		{"Restored-2024_01.a", true},
		{strings.Repeat("z", MaxClusterIDBytes), true},
		{"", false},
		{strings.Repeat("z", MaxClusterIDBytes+1), false},
		{"a/b", false},
		{"é", false},
		{"a\nb", false},
	}
	for _, tt := range tests {
		err := ValidateClusterID(tt.id)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalidArgument)) {
			t.Errorf("ValidateClusterID(%q) = %v, want ok %v", tt.id, err, tt.ok)
		}
	}
}
