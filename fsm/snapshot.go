package fsm

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	"github.com/syncstore/syncstore/internal/boltcheck"
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

// ErrBadSnapshot marks a snapshot stream that Restore refused: unframed and
// not a bbolt file, damaged, truncated, of an unknown format version, or a
// bbolt file that is not a syncstore state. The current state is untouched.
var ErrBadSnapshot = errors.New("bad snapshot")

// A snapshot stream (format version 1) frames the bbolt file so that Restore
// verifies every byte before bbolt opens it (bbolt trusts its file: on a
// damaged one it panics or reads out of bounds). Raft's snapshot store only
// checks a CRC of what the follower received, so the frame is also the one
// end-to-end check from the leader's state to the follower's:
//
//	header   24 bytes  "SSSNAP", version (uint16), applied index (uint64),
//	                   body length (uint64)
//	body     the bbolt file as tx.WriteTo writes it
//	trailer  40 bytes  body length (uint64), SHA-256 of header and body
//
// integers big-endian, and nothing after the trailer. The header's length
// lets Restore stream the body without buffering; the trailer repeats it so
// that the trailer alone says what it covers. The applied index (the state
// machine's, as stored in the body) lets a node tell from the header alone
// whether a snapshot holds more than its state (RestoreIfNewer).
const (
	snapMagic = "SSSNAP"
	// Offsets of the header's fields after the magic.
	snapAppliedAt  = len(snapMagic) + 2
	snapLengthAt   = snapAppliedAt + 8
	snapHeaderLen  = snapLengthAt + 8
	snapVersion    = 1
	snapTrailerLen = 8 + sha256.Size
)

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshot(sink, s.tx); err != nil {
		sink.Cancel()
		return fmt.Errorf("fsm: snapshot: write: %w", err)
	}
	return sink.Close()
}

func writeSnapshot(w io.Writer, tx *bolt.Tx) error {
	size := tx.Size()
	header := binary.BigEndian.AppendUint16([]byte(snapMagic), snapVersion)
	header = binary.BigEndian.AppendUint64(header, readU64(tx.Bucket(bucketMeta), keyAppliedIndex))
	header = binary.BigEndian.AppendUint64(header, uint64(size))
	if _, err := w.Write(header); err != nil {
		return err
	}
	h := sha256.New()
	h.Write(header)
	n, err := tx.WriteTo(io.MultiWriter(w, h))
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("bbolt wrote %d bytes, announced %d", n, size)
	}
	trailer := binary.BigEndian.AppendUint64(nil, uint64(n))
	_, err = w.Write(h.Sum(trailer))
	return err
}

func (s *snapshot) Release() { _ = s.tx.Rollback() }

// Restore replaces the whole state with a snapshot (never merges): the stream
// goes to a temporary file that is verified (frame and checksum, then the
// bbolt structure and our schema) and fsynced, and only then renamed over the
// state file, which is reopened. A refused snapshot returns an error wrapping
// ErrBadSnapshot and leaves the current state open and unchanged. Raft
// (v1.7.3) then keeps its old state too: InstallSnapshot logs the error and
// answers the leader with it (the leader retries later), though the stream
// stays in the follower's snapshot store; only a user Restore panics.
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
// a framed snapshot whose header names an applied index at or below the
// state's is skipped (Raft's snapshot index can be ahead of the state's by
// entries no state machine sees: no-ops, barriers); an unframed one, which
// says nothing before it is read, is restored. rc is closed either way.
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
	tmp := f.opts.Path + ".restore"
	legacy, err := receiveSnapshot(tmp, rc)
	if err == nil {
		err = checkStateFile(tmp)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("fsm: restore: %w", err)
	}
	if legacy {
		f.log.Warn("restoring an unframed (pre-format-1) snapshot: checked for structure, no checksum to verify")
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.db != nil {
		err := f.db.Close()
		f.db = nil
		if err != nil {
			return f.reopenAfter(tmp, fmt.Errorf("close current state: %w", err))
		}
	}
	if err := os.Rename(tmp, f.opts.Path); err != nil {
		return f.reopenAfter(tmp, err)
	}
	if err := syncDir(filepath.Dir(f.opts.Path)); err != nil {
		// The rename may not survive a crash: stop (closed state, the next
		// apply panics) rather than run on a state that could revert.
		return fmt.Errorf("fsm: restore: sync dir: %w", err)
	}
	db, err := f.openDB(f.opts.Path)
	if err != nil {
		// The file passed every check, so this is the disk or the OS; the
		// state machine stays closed and the next apply stops the node.
		return fmt.Errorf("fsm: restore: open restored state: %w", err)
	}
	f.db = db
	f.log.Info("state restored from snapshot", "applied_index", f.AppliedIndex())
	return nil
}

// reopenAfter reopens the current state after a failure that happened once
// it was closed but before it was replaced. Called with f.mu held.
func (f *FSM) reopenAfter(tmp string, cause error) error {
	os.Remove(tmp)
	db, err := f.openDB(f.opts.Path)
	if err != nil {
		return fmt.Errorf("fsm: restore: %w; reopening the current state: %w", cause, err)
	}
	f.db = db
	return fmt.Errorf("fsm: restore: %w (current state kept)", cause)
}

// acceptUnframed: Restore takes an unframed stream that starts like a bbolt
// file, i.e. a snapshot of a syncd before format 1. During a rolling upgrade
// a leader not yet upgraded sends them, and an upgraded leader sends those
// its snapshot store still holds from before, so refusing them would leave
// followers unable to catch up. Such a stream has no checksum: it is checked
// for structure (boltcheck.File, tx.Check, the schema) but damage inside a
// key or value goes unseen. Once every node writes format 1 and has taken a
// snapshot since, this can be turned off.
const acceptUnframed = true

// receiveSnapshot writes the snapshot body from r to path and fsyncs it;
// legacy says it was unframed.
func receiveSnapshot(path string, r io.Reader) (legacy bool, err error) {
	out, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return false, err
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	if legacy, err = copySnapshot(out, r); err != nil {
		return false, err
	}
	return legacy, out.Sync()
}

// copySnapshot writes the bbolt body of the stream r to out. A framed
// stream is verified (version, length, SHA-256, nothing after the trailer)
// as it streams; an unframed one is copied whole if acceptUnframed and it
// starts like a bbolt file; anything else is refused.
func copySnapshot(out io.Writer, r io.Reader) (legacy bool, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	start, err := br.Peek(boltcheck.HeaderLen)
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read snapshot: %w", err)
	}
	switch {
	case bytes.HasPrefix(start, []byte(snapMagic)):
		return false, receiveFramed(out, br)
	case acceptUnframed && boltcheck.LooksLikeBolt(start):
		if _, err = io.Copy(out, br); err != nil {
			return false, fmt.Errorf("copy snapshot: %w", err)
		}
		return true, nil
	}
	return false, fmt.Errorf("%w: neither a framed snapshot nor a bbolt file (starts %q)", ErrBadSnapshot, start[:min(len(start), 16)])
}

func receiveFramed(out io.Writer, r *bufio.Reader) error {
	var header [snapHeaderLen]byte
	if _, err := io.ReadFull(r, header[:]); err != nil {
		return cutShort("header", err)
	}
	if v := binary.BigEndian.Uint16(header[len(snapMagic):]); v != snapVersion {
		return fmt.Errorf("%w: format version %d; this binary reads version %d", ErrBadSnapshot, v, snapVersion)
	}
	size := binary.BigEndian.Uint64(header[snapLengthAt:])
	if size > math.MaxInt64 {
		return fmt.Errorf("%w: body length %d", ErrBadSnapshot, size)
	}
	h := sha256.New()
	h.Write(header[:])
	n, err := io.Copy(out, io.TeeReader(io.LimitReader(r, int64(size)), h))
	if err != nil {
		return fmt.Errorf("copy snapshot: %w", err) // the reader's or the disk's
	}
	if uint64(n) != size {
		return fmt.Errorf("%w: cut short: %d of %d body bytes", ErrBadSnapshot, n, size)
	}
	var trailer [snapTrailerLen]byte
	if _, err := io.ReadFull(r, trailer[:]); err != nil {
		return cutShort("trailer", err)
	}
	if got := binary.BigEndian.Uint64(trailer[:8]); got != size {
		return fmt.Errorf("%w: trailer covers %d bytes, header announced %d", ErrBadSnapshot, got, size)
	}
	if !bytes.Equal(trailer[8:], h.Sum(nil)) {
		return fmt.Errorf("%w: SHA-256 mismatch: the snapshot is damaged", ErrBadSnapshot)
	}
	if extra, err := r.Discard(1); extra > 0 {
		return fmt.Errorf("%w: bytes after the trailer", ErrBadSnapshot)
	} else if !errors.Is(err, io.EOF) {
		return fmt.Errorf("read snapshot: %w", err)
	}
	return nil
}

func cutShort(part string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: cut short in the %s", ErrBadSnapshot, part)
	}
	return fmt.Errorf("read snapshot: %w", err)
}

// checkStateFile makes sure a received snapshot is a bbolt file with our
// schema before it replaces anything. bbolt cannot be asked to do it alone:
// it trusts its file, and on a damaged one its checks themselves panic, on
// goroutines of its own where no recover can catch it (tx.Check, and the
// free page scan every read-write open of a NoFreelistSync file runs). So
// boltcheck first walks the file with bounds-checked reads and refuses
// whatever would make bbolt misbehave; only then does bbolt open it
// (read-only) to run tx.Check and read our schema.
func checkStateFile(path string) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	err = boltcheck.File(file, stateLayout)
	file.Close()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	if err := checkWithBolt(path); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	return nil
}

// stateLayout is what boltcheck may expect of a state file beyond bbolt's
// rules: top-level buckets of keys and values, no bucket inside a bucket
// (schema.go).
var stateLayout = boltcheck.Options{MaxBucketDepth: 1}

// checkWithBolt opens a file boltcheck.File accepted. Panics and memory
// faults on this goroutine are turned into errors as a last line of defence.
func checkWithBolt(path string) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("bbolt panicked on the snapshot: %v", r)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return fmt.Errorf("not a state file: %w", err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		var problems []error
		for err := range tx.Check() { // drained to the end: the checker blocks on it
			if len(problems) < 3 {
				problems = append(problems, err)
			}
		}
		if len(problems) > 0 {
			return fmt.Errorf("bbolt check: %w", errors.Join(problems...))
		}
		return checkSchema(tx)
	})
}

// checkSchema refuses a bbolt file that is not a syncstore state this binary
// can open and apply to.
func checkSchema(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return fmt.Errorf("no %s bucket: not a syncstore state", bucketMeta)
	}
	v := meta.Get(keySchema)
	if len(v) != 8 {
		return fmt.Errorf("schema version is %d bytes, want 8", len(v))
	}
	if got := binary.BigEndian.Uint64(v); got < 1 || got > schemaVersion {
		return fmt.Errorf("schema version %d; this binary knows 1 to %d", got, schemaVersion)
	}
	for _, key := range [][]byte{keyAppliedIndex, keyAppliedTerm} {
		if v := meta.Get(key); v != nil && len(v) != 8 {
			return fmt.Errorf("%s is %d bytes, want 8", key, len(v))
		}
	}
	return nil
}
