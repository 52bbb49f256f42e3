package fsm

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/shard"
)

// keyShardMap is the key of the shard map (meta group) in bucketShardMap.
var keyShardMap = []byte("current")

// ErrVersionConflict: a SetShardMap expected another version.
var ErrVersionConflict = fmt.Errorf("%w: shard map version conflict", ErrInvalidArgument)

func applySetShardMap(root *bolt.Bucket, c *fsmpb.SetShardMap) error {
	if err := ValidateShardMap(c.GetMap()); err != nil {
		return reject(err)
	}
	m, err := ShardMapFromProto(c.GetMap())
	if err != nil {
		return reject(fmt.Errorf("%w: %v", ErrInvalidArgument, err))
	}
	b := sealed{root.Bucket(bucketShardMap)}
	var cur uint64
	v, err := b.Get(keyShardMap)
	if err != nil {
		return err
	}
	if v != nil {
		var stored fsmpb.ShardMap
		if err := proto.Unmarshal(v, &stored); err != nil {
			return fmt.Errorf("decode shard map: %w", err)
		}
		cur = stored.GetVersion()
	}
	if cur != c.GetExpectedVersion() || m.Version <= cur {
		return reject(fmt.Errorf("%w: stored %d, expected %d, proposed %d", ErrVersionConflict, cur, c.GetExpectedVersion(), m.Version))
	}
	v, err = stored.Marshal(c.GetMap())
	if err != nil {
		return fmt.Errorf("encode shard map: %w", err)
	}
	return b.Put(keyShardMap, v)
}

// ShardMap returns the stored shard map, or nil when there is none yet.
func (f *FSM) ShardMap() (*shard.Map, error) {
	var pb *fsmpb.ShardMap
	err := f.view(func(root *bolt.Bucket) error {
		v, err := sealed{root.Bucket(bucketShardMap)}.Get(keyShardMap)
		if err != nil || v == nil {
			return err
		}
		pb = &fsmpb.ShardMap{}
		return proto.Unmarshal(v, pb)
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: shard map: %w", err)
	}
	if pb == nil {
		return nil, nil
	}
	return ShardMapFromProto(pb)
}

// ShardMapToProto converts a map for a SetShardMap command.
func ShardMapToProto(m *shard.Map) *fsmpb.ShardMap {
	out := &fsmpb.ShardMap{Version: m.Version}
	for _, g := range m.Groups {
		pg := &fsmpb.ShardGroup{Id: uint64(g.ID), Replicas: g.Replicas, Creator: g.Creator, Pinned: g.Pinned}
		for _, r := range g.Ranges {
			pg.Ranges = append(pg.Ranges, &fsmpb.SlotRange{Start: r.Start, End: r.End})
		}
		out.Groups = append(out.Groups, pg)
	}
	return out
}

// ShardMapFromProto converts and validates a stored or proposed map.
func ShardMapFromProto(pb *fsmpb.ShardMap) (*shard.Map, error) {
	groups := make([]shard.Group, 0, len(pb.GetGroups()))
	for _, pg := range pb.GetGroups() {
		g := shard.Group{ID: shard.GroupID(pg.GetId()), Replicas: pg.GetReplicas(), Creator: pg.GetCreator(), Pinned: pg.GetPinned()}
		for _, r := range pg.GetRanges() {
			g.Ranges = append(g.Ranges, shard.Range{Start: r.GetStart(), End: r.GetEnd()})
		}
		groups = append(groups, g)
	}
	return shard.New(pb.GetVersion(), groups)
}
