package fsm

import (
	"log/slog"
	"testing"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/storage"
)

func protoMarshal(m proto.Message) ([]byte, error) { return proto.Marshal(m) }

// testGroup is the group id test state machines use in their engine.
const testGroup = 7

// openEngine opens a storage engine in dir, closed at the end of the test.
func openEngine(tb testing.TB, dir string) *storage.Engine {
	tb.Helper()
	e, err := storage.Open(storage.Options{Dir: dir, InitialMmapSize: 1 << 20, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.Close() })
	return e
}

// openFSM opens the test group's state machine on e.
func openFSM(tb testing.TB, e *storage.Engine) *FSM {
	tb.Helper()
	st, err := e.State(testGroup)
	if err != nil {
		tb.Fatal(err)
	}
	f, err := Open(Options{State: st, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	return f
}

// newFSM is a state machine on an engine of its own.
func newFSM(tb testing.TB) *FSM {
	tb.Helper()
	return openFSM(tb, openEngine(tb, tb.TempDir()))
}

// update runs fn in a write transaction on f's state (tests that edit the
// state behind the dispatcher's back, or roll back with an error).
func (f *FSM) update(fn func(root *bolt.Bucket) error) error { return f.st.Update(fn) }

// CopyMark is the newest version of source's key that a target collection
// holds a copy of (0: none).
func (f *FSM) CopyMark(target, source, key string) (uint64, error) {
	var v uint64
	err := f.view(func(root *bolt.Bucket) error {
		var err error
		v, err = sealed{root.Bucket(bucketCollections)}.GetU64(copyMarkKey(collectionKey(target), source, key))
		return err
	})
	return v, err
}
