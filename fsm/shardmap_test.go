package fsm

import (
	"errors"
	"testing"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

func setMapCmd(t *testing.T, expected uint64, m *shard.Map) *fsmpb.Command {
	t.Helper()
	return &fsmpb.Command{Op: &fsmpb.Command_SetShardMap{SetShardMap: &fsmpb.SetShardMap{ExpectedVersion: expected, Map: ShardMapToProto(m)}}}
}

func TestSetShardMapIsACompareAndSet(t *testing.T) {
	h := newHarness(t)
	if m, err := h.f.ShardMap(); m != nil || err != nil {
		t.Fatalf("a new state has map %v, %v", m, err)
	}
	v1, err := shard.Initial(4, "n1", []string{"n1"})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := shard.Place(v1, []string{"n1", "n2", "n3"})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name     string
		cmd      *fsmpb.Command
		wantErr  error
		wantVers uint64
	}{
		{"first map", setMapCmd(t, 0, v1), nil, 1},
		{"stale expectation", setMapCmd(t, 0, v2), ErrVersionConflict, 1},
		{"same version again", setMapCmd(t, 1, v1), ErrVersionConflict, 1},
		{"next map", setMapCmd(t, 1, v2), nil, 2},
		{"invalid map", &fsmpb.Command{Op: &fsmpb.Command_SetShardMap{SetShardMap: &fsmpb.SetShardMap{ExpectedVersion: 2, Map: &fsmpb.ShardMap{Version: 3}}}}, ErrInvalidArgument, 2},
	}
	for _, s := range steps {
		r := h.apply(s.cmd)[0]
		if !errors.Is(r.Err, s.wantErr) || (s.wantErr == nil && r.Err != nil) {
			t.Fatalf("%s: got %v, want %v", s.name, r.Err, s.wantErr)
		}
		m, err := h.f.ShardMap()
		if err != nil || m.Version != s.wantVers {
			t.Fatalf("%s: stored map %v, %v; want version %d", s.name, m, err, s.wantVers)
		}
	}
	m, _ := h.f.ShardMap()
	if g, ok := m.Group(1); !ok || len(g.Replicas) != 3 || g.Creator != "n1" {
		t.Fatalf("group 1 after the second map: %+v", g)
	}
}

func TestAGroupRefusesTimelinesOutsideItsRanges(t *testing.T) {
	h := newHarness(t)
	// "a" is in slot 816, "alice" in 654 (pinned in shard's tests).
	setRanges := func(version uint64, start, end uint32) *fsmpb.Command {
		return &fsmpb.Command{Op: &fsmpb.Command_SetRanges{SetRanges: &fsmpb.SetRanges{MapVersion: version, Ranges: []*fsmpb.SlotRange{{Start: start, End: end}}}}}
	}
	steps := []struct {
		name string
		cmd  *fsmpb.Command
		want error
	}{
		{"before any ranges, anything goes", appendCmd("alice", "x", "", 1), nil},
		{"own 700..900", setRanges(2, 700, 900), nil},
		{"in range", appendCmd("a", "x", "", 2), nil},
		{"out of range", appendCmd("alice", "y", "", 3), ErrWrongGroup},
		{"an older map is ignored", setRanges(1, 0, 700), nil},
		{"still out of range", appendCmd("alice", "y", "", 4), ErrWrongGroup},
		{"a newer map moves the ranges", setRanges(3, 600, 700), nil},
		{"now in range", appendCmd("alice", "y", "", 5), nil},
		{"bad range", setRanges(4, 9, 9), ErrInvalidArgument},
	}
	for _, s := range steps {
		before := h.digest()
		r := h.apply(s.cmd)[0]
		if !errors.Is(r.Err, s.want) || (s.want == nil && r.Err != nil) {
			t.Fatalf("%s: got %v, want %v", s.name, r.Err, s.want)
		}
		if s.want != nil && h.digest() != before {
			t.Fatalf("%s: a refused command changed the state", s.name)
		}
	}
	if ranges, v, ok, err := h.f.OwnedRanges(); err != nil || !ok || v != 3 || len(ranges) != 1 || ranges[0] != (shard.Range{Start: 600, End: 700}) {
		t.Fatalf("owned ranges %v v%d %v %v", ranges, v, ok, err)
	}
}
