package node

import (
	"sync/atomic"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// boltSyncsPerWrite: a bbolt write transaction fsyncs twice, its pages and
// then the meta page pointing at them.
const boltSyncsPerWrite = 2

// countedMetaStore is the meta group's raft-boltdb file, counting its
// fsyncs: each LogStore or StableStore write is one synced transaction.
type countedMetaStore struct {
	*raftboltdb.BoltStore
	fsyncs *atomic.Uint64
}

func (s countedMetaStore) count(err error) error {
	s.fsyncs.Add(boltSyncsPerWrite) // a failed commit may have synced too
	return err
}

func (s countedMetaStore) StoreLog(l *raft.Log) error { return s.count(s.BoltStore.StoreLog(l)) }
func (s countedMetaStore) StoreLogs(l []*raft.Log) error {
	return s.count(s.BoltStore.StoreLogs(l))
}
func (s countedMetaStore) DeleteRange(lo, hi uint64) error {
	return s.count(s.BoltStore.DeleteRange(lo, hi))
}
func (s countedMetaStore) Set(k, v []byte) error { return s.count(s.BoltStore.Set(k, v)) }
func (s countedMetaStore) SetUint64(k []byte, v uint64) error {
	return s.count(s.BoltStore.SetUint64(k, v))
}
