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
