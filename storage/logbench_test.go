package storage

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
)

// The log stores side by side, as the node uses them: G groups, each
// appending batches of 4 entries of 256 bytes from its own goroutine (a
// group's Raft appends one batch at a time), all groups at once.
//
//	go test ./storage -run '^$' -bench BenchmarkLogStores -benchtime 4000x
//
// reports, per entry, wall time, CPU (user+system of the process) and
// fsyncs where the store counts them.
func BenchmarkLogStores(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B, dir string, groups int) ([]appender, func() uint64, func())
	}{
		{"raft-boltdb per group", openRaftBoltPerGroup},
		{"shared bbolt, group commit", openSharedBolt},
		{"engine WAL", openEngineLogs},
	}
	for _, groups := range []int{1, 8, 64} {
		for _, s := range stores {
			b.Run(fmt.Sprintf("%s/groups=%d", s.name, groups), func(b *testing.B) {
				logs, fsyncs, closeFn := s.open(b, b.TempDir(), groups)
				defer closeFn()
				benchAppends(b, logs, fsyncs)
			})
		}
	}
}

const benchBatch = 4

// appender is the part of raft.LogStore the benchmark drives.
type appender interface{ StoreLogs([]*raft.Log) error }

func benchAppends(b *testing.B, logs []appender, fsyncs func() uint64) {
	data := make([]byte, 256)
	perGroup := (b.N + len(logs) - 1) / len(logs)
	f0 := fsyncs()
	var r0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	b.ResetTimer()
	var wg sync.WaitGroup
	for _, l := range logs {
		wg.Go(func() {
			next := uint64(1)
			for range perGroup {
				batch := make([]*raft.Log, benchBatch)
				for i := range batch {
					batch[i] = &raft.Log{Index: next, Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: time.Now()}
					next++
				}
				if err := l.StoreLogs(batch); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	var r1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	entries := float64(perGroup * len(logs) * benchBatch)
	cpu := time.Duration(r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano())
	b.ReportMetric(float64(cpu.Nanoseconds())/entries, "cpu-ns/entry")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/entries, "wall-ns/entry")
	if f := fsyncs(); f != ^uint64(0) {
		b.ReportMetric(float64(f-f0)/entries, "fsyncs/entry")
	}
}

func openRaftBoltPerGroup(b *testing.B, dir string, groups int) ([]appender, func() uint64, func()) {
	var logs []appender
	var closers []func() error
	for g := range groups {
		s, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, fmt.Sprint(g, ".db")), BoltOptions: &bolt.Options{FreelistType: bolt.FreelistMapType, NoFreelistSync: true}})
		if err != nil {
			b.Fatal(err)
		}
		logs = append(logs, s)
		closers = append(closers, s.Close)
	}
	return logs, func() uint64 { return ^uint64(0) }, func() {
		for _, c := range closers {
			c()
		}
	}
}

func openEngineLogs(b *testing.B, dir string, groups int) ([]appender, func() uint64, func()) {
	e, err := Open(Options{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	var logs []appender
	for g := range groups {
		l, err := e.Log(uint64(g + 1))
		if err != nil {
			b.Fatal(err)
		}
		logs = append(logs, l)
	}
	return logs, func() uint64 { return e.Fsyncs()["log"] }, func() { e.Close() }
}

// sharedBoltLog is the design the WAL replaced, kept here to be measured
// beside it: every group's entries in one bbolt file (a bucket per group),
// written through a committer, so one commit (two fdatasyncs: bbolt's data
// pages, then its meta page) serves every group queued.
type sharedBoltLog struct {
	c      *committer
	bucket []byte
}

func (l *sharedBoltLog) StoreLogs(entries []*raft.Log) error {
	return l.c.do(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(l.bucket)
		if err != nil {
			return err
		}
		b.FillPercent = 1
		for _, e := range entries {
			if err := b.Put(binary.BigEndian.AppendUint64(nil, e.Index), encodeEntryRecord(0, e)); err != nil {
				return err
			}
		}
		return nil
	}, nil)
}

func openSharedBolt(b *testing.B, dir string, groups int) ([]appender, func() uint64, func()) {
	db, err := bolt.Open(filepath.Join(dir, "log.db"), 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		b.Fatal(err)
	}
	var commits atomic.Uint64
	c := newCommitter(db, "log", 2, func(CommitInfo) { commits.Add(1) })
	c.start()
	var logs []appender
	for g := range groups {
		logs = append(logs, &sharedBoltLog{c: c, bucket: binary.BigEndian.AppendUint64(nil, uint64(g))})
	}
	return logs, func() uint64 { return 2 * commits.Load() }, func() { c.close(); db.Close() }
}
