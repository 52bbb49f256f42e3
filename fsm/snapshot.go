package fsm

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/fsm/fsmpb"
)

// Snapshot captures the state as of the last applied entry. Raft calls it on
// the apply goroutine, so the read transaction it opens sees exactly the
// applied prefix; Persist streams that transaction while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return nil, ErrClosed
	}
	tx, err := f.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("fsm: snapshot: begin read: %w", err)
	}
	return &snapshot{tx: tx}, nil
}

type snapshot struct {
	tx *bolt.Tx
}

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.tx.WriteTo(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("fsm: snapshot: write: %w", err)
	}
	return sink.Close()
}

func (s *snapshot) Release() { _ = s.tx.Rollback() }

// Restore replaces the whole state with a snapshot (never merges): the stream
// goes to a temporary file that is fsynced, checked and renamed over the
// state file, which is then reopened.
func (f *FSM) Restore(rc io.ReadCloser) error {
	if err := f.restore(rc); err != nil {
		return err
	}
	if f.opts.OnRestore != nil {
		f.opts.OnRestore()
	}
	return nil
}

func (f *FSM) restore(rc io.ReadCloser) error {
	defer rc.Close()
	tmp := f.opts.Path + ".restore"
	if err := writeFileSynced(tmp, rc); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("fsm: restore: %w", err)
	}
	if err := checkStateFile(tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("fsm: restore: %w", err)
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.db != nil {
		if err := f.db.Close(); err != nil {
			return fmt.Errorf("fsm: restore: close current state: %w", err)
		}
		f.db = nil
	}
	if err := os.Rename(tmp, f.opts.Path); err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	if err := syncDir(filepath.Dir(f.opts.Path)); err != nil {
		return fmt.Errorf("fsm: restore: sync dir: %w", err)
	}
	db, err := f.openDB(f.opts.Path)
	if err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	f.db = db
	f.log.Info("state restored from snapshot", "applied_index", f.AppliedIndex())
	return nil
}

func writeFileSynced(path string, r io.Reader) error {
	out, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// checkStateFile makes sure a received snapshot is a bbolt file with our
// schema before it replaces anything.
func checkStateFile(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("snapshot is not a state file: %w", err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta) == nil {
			return fmt.Errorf("snapshot has no %s bucket", bucketMeta)
		}
		return nil
	})
}

// Digest hashes every data bucket. Replicas that applied the same log prefix
// have the same digest; tests and the fault checker compare them.
func (f *FSM) Digest() (string, error) {
	h := sha256.New()
	err := f.view(func(tx *bolt.Tx) error {
		for _, name := range dataBuckets {
			h.Write(name)
			err := tx.Bucket(name).ForEach(func(k, v []byte) error {
				writeLenPrefixed(h, k)
				writeLenPrefixed(h, v)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("fsm: digest: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func writeLenPrefixed(w io.Writer, b []byte) {
	w.Write(binary.BigEndian.AppendUint64(nil, uint64(len(b))))
	w.Write(b)
}

// Node is a registered cluster member.
type Node struct {
	ID         string
	RaftAddr   string
	GRPCAddr   string
	GossipAddr string
}

// Nodes lists the registered members, ordered by id.
func (f *FSM) Nodes() ([]Node, error) {
	var nodes []Node
	err := f.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNodes).ForEach(func(_, v []byte) error {
			var rec fsmpb.NodeRecord
			if err := proto.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("decode node record: %w", err)
			}
			nodes = append(nodes, Node{ID: rec.GetNodeId(), RaftAddr: rec.GetRaftAddr(), GRPCAddr: rec.GetGrpcAddr(), GossipAddr: rec.GetGossipAddr()})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: nodes: %w", err)
	}
	return nodes, nil
}
