package fsm

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/storage"
)

// Snapshot captures the state as of the last applied entry. Raft calls it on
// the apply goroutine, so the read transaction it opens sees exactly the
// applied prefix; Persist streams that transaction while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	if f.closed.Load() {
		return nil, ErrClosed
	}
	rtx, err := f.st.BeginRead()
	if err != nil {
		return nil, fmt.Errorf("fsm: snapshot: %w", err)
	}
	return &snapshot{rtx: rtx}, nil
}

type snapshot struct {
	rtx *storage.ReadTx
}

// ErrBadSnapshot marks a snapshot stream that Restore refused: damaged,
// truncated, of an unknown format version, or not a syncstore state. The
// current state is untouched.
var ErrBadSnapshot = errors.New("bad snapshot")

// A snapshot stream (format version 2) is the group's state as records,
// verified as a whole before it replaces anything. Raft's snapshot store
// only checks a CRC of what the follower received, so the frame is also the
// one end-to-end check from the leader's state to the follower's:
//
//	header   16 bytes  "SSSNAP", version (uint16), applied index (uint64)
//	records  'b' name        a bucket of the root, whose pairs follow
//	         'k' key value   a pair of the current bucket
//	trailer  'z', record count (uint64), SHA-256 of everything before it
//
// names, keys and values each a uvarint length and the bytes; integers
// big-endian; nothing after the trailer. The applied index (as stored in
// the state) lets a node tell from the header alone whether a snapshot
// holds more than its state (RestoreIfNewer). Format 1 (a bbolt file per
// group) belongs to data dir layout 1 and is refused.
const (
	snapMagic = "SSSNAP"
	// Offsets of the header's fields after the magic.
	snapAppliedAt = len(snapMagic) + 2
	snapHeaderLen = snapAppliedAt + 8
	snapVersion   = 2

	recBucket  = 'b'
	recPair    = 'k'
	recTrailer = 'z'

	// maxSnapshotValue bounds one value in a snapshot (the largest the
	// state holds is an entry of at most MaxPayloadBytes and its metadata),
	// so a damaged length cannot make Restore allocate without bound.
	maxSnapshotValue = 16 << 20
	// restoreChunkBytes bounds what one restore transaction writes, so a
	// large snapshot restores in bounded memory.
	restoreChunkBytes = 16 << 20
)

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	bw := bufio.NewWriterSize(sink, 256<<10)
	err := writeSnapshot(bw, s.rtx.Root)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("fsm: snapshot: write: %w", err)
	}
	return sink.Close()
}

func (s *snapshot) Release() { s.rtx.Release() }

// snapWriter writes records and hashes what it writes.
type snapWriter struct {
	w     io.Writer
	h     hash.Hash
	buf   []byte
	err   error
	count uint64
}

func (sw *snapWriter) write(b []byte) {
	if sw.err == nil {
		sw.h.Write(b)
		_, sw.err = sw.w.Write(b)
	}
}

func (sw *snapWriter) record(kind byte, parts ...[]byte) {
	sw.buf = append(sw.buf[:0], kind)
	for _, p := range parts {
		sw.buf = binary.AppendUvarint(sw.buf, uint64(len(p)))
		sw.write(sw.buf)
		sw.buf = sw.buf[:0]
		sw.write(p)
	}
	if len(parts) == 0 {
		sw.write(sw.buf)
	}
	sw.count++
}

func writeSnapshot(w io.Writer, root *bolt.Bucket) error {
	sw := &snapWriter{w: w, h: sha256.New()}
	header := binary.BigEndian.AppendUint16([]byte(snapMagic), snapVersion)
	sw.write(binary.BigEndian.AppendUint64(header, readU64(root.Bucket(bucketMeta), keyAppliedIndex)))
	err := root.ForEachBucket(func(name []byte) error {
		sw.record(recBucket, name)
		return root.Bucket(name).ForEach(func(k, v []byte) error {
			if v == nil {
				return fmt.Errorf("bucket %s holds a bucket %q: not a state this binary writes", name, k)
			}
			sw.record(recPair, k, v)
			return sw.err
		})
	})
	if err != nil {
		return err
	}
	trailer := binary.BigEndian.AppendUint64([]byte{recTrailer}, sw.count)
	sw.write(trailer)
	if sw.err != nil {
		return sw.err
	}
	_, err = w.Write(sw.h.Sum(nil))
	return err
}

// Restore replaces the whole state with a snapshot (never merges): the
// stream is loaded into a staging root in bounded transactions while it is
// verified (frame, limits, checksum), and only a complete, verified one
// that holds a state of this schema replaces the group's state, in one
// transaction. A refused snapshot returns an error wrapping ErrBadSnapshot
// and leaves the current state unchanged. Raft (v1.7.3) then keeps its old
// state too: InstallSnapshot logs the error and answers the leader with it
// (the leader retries later), though the stream stays in the follower's
// snapshot store; only a user Restore panics.
func (f *FSM) Restore(rc io.ReadCloser) error {
	if err := f.restore(rc); err != nil {
		return err
	}
	if f.opts.OnRestore != nil {
		f.opts.OnRestore()
	}
	return nil
}

// RestoreIfNewer restores a snapshot only if it holds more than the state:
// one whose header names an applied index at or below the state's is
// skipped (Raft's snapshot index can be ahead of the state's by entries no
// state machine sees: no-ops, barriers). rc is closed either way.
func (f *FSM) RestoreIfNewer(rc io.ReadCloser) (restored bool, err error) {
	br := bufio.NewReaderSize(rc, 64<<10)
	if h, _ := br.Peek(snapHeaderLen); len(h) == snapHeaderLen && bytes.HasPrefix(h, []byte(snapMagic)) {
		if binary.BigEndian.Uint64(h[snapAppliedAt:]) <= f.AppliedIndex() {
			return false, rc.Close()
		}
	}
	err = f.Restore(struct {
		io.Reader
		io.Closer
	}{br, rc})
	return err == nil, err
}

func (f *FSM) restore(rc io.ReadCloser) error {
	defer rc.Close()
	if f.closed.Load() {
		return ErrClosed
	}
	staging, err := f.st.NewStaging()
	if err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	applied, err := loadSnapshot(rc, staging)
	if err == nil {
		err = staging.Install(func(root *bolt.Bucket) error {
			if err := checkSchema(root); err != nil {
				return fmt.Errorf("%w: %w", ErrBadSnapshot, err)
			}
			if got := readU64(root.Bucket(bucketMeta), keyAppliedIndex); got != applied {
				return fmt.Errorf("%w: header says applied index %d, the state holds %d", ErrBadSnapshot, applied, got)
			}
			return nil
		})
	}
	if err != nil {
		if aerr := staging.Abort(); aerr != nil {
			f.log.Error("fsm: restore: dropping the staged snapshot failed", "err", aerr)
		}
		return fmt.Errorf("fsm: restore: %w", err)
	}
	if err := f.loadApplied(false); err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	f.log.Info("state restored from snapshot", "applied_index", f.AppliedIndex())
	return nil
}

// snapReader reads records and hashes what it reads.
type snapReader struct {
	r *bufio.Reader
	h hash.Hash
}

func (sr *snapReader) full(b []byte, part string) error {
	if _, err := io.ReadFull(sr.r, b); err != nil {
		return cutShort(part, err)
	}
	sr.h.Write(b)
	return nil
}

// bytes reads a uvarint length and that many bytes, at most limit.
func (sr *snapReader) bytes(part string, limit uint64) ([]byte, error) {
	var lenBuf [binary.MaxVarintLen64]byte
	n := 0
	for {
		c, err := sr.r.ReadByte()
		if err != nil {
			return nil, cutShort(part, err)
		}
		lenBuf[n] = c
		n++
		if c < 0x80 {
			break
		}
		if n == len(lenBuf) {
			return nil, fmt.Errorf("%w: bad %s length", ErrBadSnapshot, part)
		}
	}
	sr.h.Write(lenBuf[:n])
	size, _ := binary.Uvarint(lenBuf[:n])
	if size > limit {
		return nil, fmt.Errorf("%w: %s of %d bytes (at most %d)", ErrBadSnapshot, part, size, limit)
	}
	b := make([]byte, size)
	return b, sr.full(b, part)
}

// loadSnapshot verifies the stream while it writes its records into the
// staging root, restoreChunkBytes per transaction; it returns the header's
// applied index. Nothing it writes is visible before Install.
func loadSnapshot(r io.Reader, staging *storage.Staging) (uint64, error) {
	sr := &snapReader{r: bufio.NewReaderSize(r, 64<<10), h: sha256.New()}
	var header [snapHeaderLen]byte
	if err := sr.full(header[:], "header"); err != nil {
		return 0, err
	}
	if !bytes.HasPrefix(header[:], []byte(snapMagic)) {
		return 0, fmt.Errorf("%w: not a syncstore snapshot (starts %q)", ErrBadSnapshot, header[:len(snapMagic)])
	}
	if v := binary.BigEndian.Uint16(header[len(snapMagic):]); v != snapVersion {
		return 0, fmt.Errorf("%w: format version %d; this binary reads version %d (format 1 came from data dir layout 1)", ErrBadSnapshot, v, snapVersion)
	}
	applied := binary.BigEndian.Uint64(header[snapAppliedAt:])

	type pair struct{ bucket, k, v []byte }
	var (
		chunk      []pair
		chunkBytes int
		bucket     []byte
		count      uint64
	)
	flush := func() error {
		err := staging.Update(func(root *bolt.Bucket) error {
			var b *bolt.Bucket
			var name []byte
			for _, p := range chunk {
				if b == nil || !bytes.Equal(name, p.bucket) {
					var err error
					if b, err = root.CreateBucketIfNotExists(p.bucket); err != nil {
						return err
					}
					name = p.bucket
				}
				if p.k != nil {
					if err := b.Put(p.k, p.v); err != nil {
						return err
					}
				}
			}
			return nil
		})
		chunk, chunkBytes = chunk[:0], 0
		return err
	}
	for {
		kind, err := sr.r.ReadByte()
		if err != nil {
			return 0, cutShort("records", err)
		}
		sr.h.Write([]byte{kind})
		switch kind {
		case recBucket:
			if bucket, err = sr.bytes("bucket name", bolt.MaxKeySize); err != nil {
				return 0, err
			}
			if len(bucket) == 0 {
				return 0, fmt.Errorf("%w: empty bucket name", ErrBadSnapshot)
			}
			chunk = append(chunk, pair{bucket: bucket})
		case recPair:
			if bucket == nil {
				return 0, fmt.Errorf("%w: a pair outside any bucket", ErrBadSnapshot)
			}
			k, err := sr.bytes("key", bolt.MaxKeySize)
			if err != nil {
				return 0, err
			}
			if len(k) == 0 {
				return 0, fmt.Errorf("%w: empty key", ErrBadSnapshot)
			}
			v, err := sr.bytes("value", maxSnapshotValue)
			if err != nil {
				return 0, err
			}
			chunk = append(chunk, pair{bucket: bucket, k: k, v: v})
			chunkBytes += len(k) + len(v)
		case recTrailer:
			var n [8]byte
			if err := sr.full(n[:], "trailer"); err != nil {
				return 0, err
			}
			if got := binary.BigEndian.Uint64(n[:]); got != count {
				return 0, fmt.Errorf("%w: trailer counts %d records, the stream holds %d", ErrBadSnapshot, got, count)
			}
			want := sr.h.Sum(nil)
			var sum [sha256.Size]byte
			if _, err := io.ReadFull(sr.r, sum[:]); err != nil {
				return 0, cutShort("trailer", err)
			}
			if !bytes.Equal(sum[:], want) {
				return 0, fmt.Errorf("%w: SHA-256 mismatch: the snapshot is damaged", ErrBadSnapshot)
			}
			if extra, err := sr.r.Discard(1); extra > 0 {
				return 0, fmt.Errorf("%w: bytes after the trailer", ErrBadSnapshot)
			} else if !errors.Is(err, io.EOF) {
				return 0, fmt.Errorf("read snapshot: %w", err)
			}
			return applied, flush()
		default:
			return 0, fmt.Errorf("%w: unknown record kind 0x%02x", ErrBadSnapshot, kind)
		}
		count++
		if chunkBytes >= restoreChunkBytes {
			if err := flush(); err != nil {
				return 0, err
			}
		}
	}
}

func cutShort(part string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: cut short in the %s", ErrBadSnapshot, part)
	}
	return fmt.Errorf("read snapshot: %w", err)
}

// checkSchema refuses a root that is not a syncstore state this binary can
// apply to.
func checkSchema(root *bolt.Bucket) error {
	meta := root.Bucket(bucketMeta)
	if meta == nil {
		return fmt.Errorf("no %s bucket: not a syncstore state", bucketMeta)
	}
	v := meta.Get(keySchema)
	if len(v) != 8 {
		return fmt.Errorf("schema version is %d bytes, want 8", len(v))
	}
	if got := binary.BigEndian.Uint64(v); got != schemaVersion {
		return fmt.Errorf("schema version %d; this binary reads version %d", got, schemaVersion)
	}
	for _, key := range [][]byte{keyAppliedIndex, keyAppliedTerm} {
		if v := meta.Get(key); v != nil && len(v) != 8 {
			return fmt.Errorf("%s is %d bytes, want 8", key, len(v))
		}
	}
	for _, name := range dataBuckets {
		if root.Bucket(name) == nil {
			return fmt.Errorf("no %s bucket", name)
		}
	}
	return nil
}
