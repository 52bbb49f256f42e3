package fsm

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
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
//	header   16 bytes  "SSSNAP", version (uint16), body length (uint64)
//	body     the bbolt file as tx.WriteTo writes it
//	trailer  40 bytes  body length (uint64), SHA-256 of the body
//
// integers big-endian, and nothing after the trailer. The header's length
// lets Restore stream the body without buffering; the trailer repeats it so
// that the trailer alone says what it covers.
const (
	snapMagic      = "SSSNAP"
	snapVersion    = 1
	snapHeaderLen  = len(snapMagic) + 2 + 8
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
	header = binary.BigEndian.AppendUint64(header, uint64(size))
	if _, err := w.Write(header); err != nil {
		return err
	}
	h := sha256.New()
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
// for structure (validateBoltFile, tx.Check, the schema) but damage inside a
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
	start, err := br.Peek(boltMetaEnd)
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read snapshot: %w", err)
	}
	switch {
	case bytes.HasPrefix(start, []byte(snapMagic)):
		return false, receiveFramed(out, br)
	case acceptUnframed && looksLikeBolt(start):
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
	size := binary.BigEndian.Uint64(header[len(snapMagic)+2:])
	if size > math.MaxInt64 {
		return fmt.Errorf("%w: body length %d", ErrBadSnapshot, size)
	}
	h := sha256.New()
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
		return fmt.Errorf("%w: SHA-256 mismatch: the body is damaged", ErrBadSnapshot)
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
// validateBoltFile first walks the file with bounds-checked reads and
// refuses whatever would make bbolt misbehave; only then does bbolt open it
// (read-only) to run tx.Check and read our schema.
func checkStateFile(path string) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	err = validateBoltFile(file)
	file.Close()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	if err := checkWithBolt(path); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	return nil
}

// checkWithBolt opens a file validateBoltFile accepted. Panics and memory
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

// The bbolt v1.4 file format, as far as validateBoltFile needs it (from
// go.etcd.io/bbolt/internal/common: page.go, meta.go, bucket.go). bbolt
// writes its structs in the machine's byte order. TestSnapshotBoltLayout
// pins these against a file bbolt wrote; a bbolt upgrade must pass it and
// TestSnapshotValidatorAcceptsWhatBboltWrites.
const (
	boltPageHeaderLen = 16 // id u64, flags u16, count u16, overflow u32
	boltElementLen    = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags, pos, ksize, vsize u32
	boltMetaLen       = 64 // magic, version, pageSize, flags u32; root, sequence, freelist, pgid, txid, checksum u64
	boltMetaEnd       = boltPageHeaderLen + boltMetaLen
	boltBucketLen     = 16 // root pgid u64, sequence u64
	boltMagic         = 0xED0CDAED
	boltVersion       = 2

	boltBranchPage   = 0x01
	boltLeafPage     = 0x02
	boltMetaPage     = 0x04
	boltFreelistPage = 0x10
	boltBucketLeaf   = 0x01
	boltNoFreelist   = math.MaxUint64

	boltMinPageSize = 1 << 10
	boltMaxPageSize = 1 << 16
	boltMaxKeyLen   = 32768 // bolt.MaxKeySize
	// boltMaxDepth bounds branch levels plus bucket nesting; a real state is
	// a handful deep.
	boltMaxDepth = 64
	// boltPageBuf is how much of a page is read at once; the elements of a
	// page always fit (65535 elements of 16 bytes), bigger values are read
	// when needed.
	boltPageBuf = 1 << 20
)

var ne = binary.NativeEndian

// looksLikeBolt says whether b starts like a bbolt file: page 0, a meta
// page, bbolt's magic.
func looksLikeBolt(b []byte) bool {
	return len(b) >= boltMetaEnd && ne.Uint64(b) == 0 && ne.Uint16(b[8:]) == boltMetaPage &&
		ne.Uint32(b[boltPageHeaderLen:]) == boltMagic
}

type boltMeta struct {
	pageSize                uint64
	root, freelist, hwm, tx uint64
}

// parseBoltMeta reads and verifies a meta page (header included) as
// bbolt's Meta.Validate does, plus the page header.
func parseBoltMeta(b []byte, id uint64) (boltMeta, error) {
	if len(b) < boltMetaEnd {
		return boltMeta{}, fmt.Errorf("meta page %d cut short", id)
	}
	if ne.Uint64(b) != id || ne.Uint16(b[8:]) != boltMetaPage {
		return boltMeta{}, fmt.Errorf("page %d is not a meta page", id)
	}
	m := b[boltPageHeaderLen:boltMetaEnd]
	if ne.Uint32(m) != boltMagic {
		return boltMeta{}, fmt.Errorf("meta page %d: bad magic", id)
	}
	if v := ne.Uint32(m[4:]); v != boltVersion {
		return boltMeta{}, fmt.Errorf("meta page %d: bbolt format version %d, want %d", id, v, boltVersion)
	}
	h := fnv.New64a()
	h.Write(m[:56])
	if h.Sum64() != ne.Uint64(m[56:]) {
		return boltMeta{}, fmt.Errorf("meta page %d: checksum mismatch", id)
	}
	return boltMeta{pageSize: uint64(ne.Uint32(m[8:])), root: ne.Uint64(m[16:]), freelist: ne.Uint64(m[32:]), hwm: ne.Uint64(m[40:]), tx: ne.Uint64(m[48:])}, nil
}

// validateBoltFile checks, with bounds-checked reads only, everything bbolt
// takes for granted when it opens, checks, reads and writes a file: both
// meta pages valid with one page size; for the tree of each meta, every page
// within the file and below the high water mark, self-identified, of the
// right type, reached once and not free; elements, keys and values inside
// their page; keys non-empty, at most bbolt's limit and in B+tree order
// (the same rules as tx.Check, whose violations bbolt turns into panics);
// every leaf of a tree at one depth; bucket values well formed, inline
// buckets leaf pages with id 0 (as bbolt writes them: it would free the page
// a stale id names). On top, what a syncstore state is: the root holds only
// buckets and those buckets hold no buckets.
func validateBoltFile(file *os.File) error {
	st, err := file.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	buf := make([]byte, boltMetaEnd)
	if _, err := file.ReadAt(buf, 0); err != nil {
		return fmt.Errorf("not a bbolt file: %d bytes", size)
	}
	m0, err := parseBoltMeta(buf, 0)
	if err != nil {
		return err
	}
	ps := m0.pageSize
	if ps < boltMinPageSize || ps > boltMaxPageSize || ps&(ps-1) != 0 {
		return fmt.Errorf("page size %d", ps)
	}
	if _, err := file.ReadAt(buf, int64(ps)); err != nil {
		return fmt.Errorf("no second meta page: %d bytes", size)
	}
	m1, err := parseBoltMeta(buf, 1)
	if err != nil {
		return err
	}
	if m1.pageSize != ps {
		return fmt.Errorf("meta pages disagree on the page size: %d, %d", ps, m1.pageSize)
	}
	// bbolt opens with the meta of the higher txid and falls back to the
	// other: both trees must hold.
	if err := validateBoltTree(file, size, m0); err != nil {
		return fmt.Errorf("meta 0: %w", err)
	}
	if m1.root != m0.root || m1.freelist != m0.freelist || m1.hwm != m0.hwm {
		if err := validateBoltTree(file, size, m1); err != nil {
			return fmt.Errorf("meta 1: %w", err)
		}
	}
	return nil
}

type boltWalk struct {
	r        io.ReaderAt
	pageSize uint64
	hwm      uint64
	reached  []uint64 // bitset of pages reached
	free     []uint64 // bitset of pages on the stored freelist
}

func bitSet(b []uint64, i uint64) bool { return b[i/64]&(1<<(i%64)) != 0 }
func setBit(b []uint64, i uint64)      { b[i/64] |= 1 << (i % 64) }

func validateBoltTree(r io.ReaderAt, size int64, m boltMeta) error {
	if m.hwm < 3 || m.hwm > uint64(size)/m.pageSize {
		return fmt.Errorf("high water mark %d pages, file holds %d", m.hwm, uint64(size)/m.pageSize)
	}
	w := &boltWalk{r: r, pageSize: m.pageSize, hwm: m.hwm, reached: make([]uint64, (m.hwm+63)/64), free: make([]uint64, (m.hwm+63)/64)}
	setBit(w.reached, 0)
	setBit(w.reached, 1)
	if m.freelist != boltNoFreelist {
		if err := w.freelist(m.freelist); err != nil {
			return err
		}
	}
	if m.root < 2 || m.root >= m.hwm {
		return fmt.Errorf("root page %d out of range", m.root)
	}
	_, _, err := w.page(m.root, nil, nil, 0, 0)
	return err
}

// span marks the pages id..id+overflow as reached.
func (w *boltWalk) span(id, overflow uint64) error {
	if id < 2 || id >= w.hwm || overflow >= w.hwm-id {
		return fmt.Errorf("page %d (+%d overflow) out of range (high water mark %d)", id, overflow, w.hwm)
	}
	for p := id; p <= id+overflow; p++ {
		if bitSet(w.reached, p) {
			return fmt.Errorf("page %d reached twice", p)
		}
		if bitSet(w.free, p) {
			return fmt.Errorf("page %d is both reachable and free", p)
		}
		setBit(w.reached, p)
	}
	return nil
}

// boltPage is a page's bytes: the first boltPageBuf of them in memory, the
// rest read on demand.
type boltPage struct {
	r    io.ReaderAt
	off  int64
	size uint64
	head []byte
}

// at returns size bytes at offset o in the page, or an error if they are
// not all inside it.
func (p *boltPage) at(o, n uint64) ([]byte, error) {
	if o > p.size || n > p.size-o {
		return nil, fmt.Errorf("%d bytes at %d overrun the page (%d bytes)", n, o, p.size)
	}
	if o+n <= uint64(len(p.head)) {
		return p.head[o : o+n], nil
	}
	b := make([]byte, n)
	if _, err := p.r.ReadAt(b, p.off+int64(o)); err != nil {
		return nil, err
	}
	return b, nil
}

// read loads page id: its header checked against id and its span marked.
func (w *boltWalk) read(id uint64, wantFlags ...uint16) (*boltPage, uint16, uint16, error) {
	if id < 2 || id >= w.hwm {
		return nil, 0, 0, fmt.Errorf("page %d out of range (high water mark %d)", id, w.hwm)
	}
	off := int64(id * w.pageSize)
	first := make([]byte, w.pageSize) // below the high water mark: inside the file
	if _, err := w.r.ReadAt(first, off); err != nil {
		return nil, 0, 0, fmt.Errorf("page %d: %w", id, err)
	}
	flags, count, overflow := ne.Uint16(first[8:]), ne.Uint16(first[10:]), uint64(ne.Uint32(first[12:]))
	if got := ne.Uint64(first); got != id {
		return nil, 0, 0, fmt.Errorf("page %d says it is page %d", id, got)
	}
	if !slices.Contains(wantFlags, flags) {
		return nil, 0, 0, fmt.Errorf("page %d has type %#x, want one of %#x", id, flags, wantFlags)
	}
	if err := w.span(id, overflow); err != nil {
		return nil, 0, 0, err
	}
	p := &boltPage{r: w.r, off: off, size: (overflow + 1) * w.pageSize, head: first}
	if p.size > w.pageSize {
		p.head = make([]byte, min(p.size, boltPageBuf))
		copy(p.head, first)
		if _, err := w.r.ReadAt(p.head[w.pageSize:], off+int64(w.pageSize)); err != nil {
			return nil, 0, 0, fmt.Errorf("page %d: %w", id, err)
		}
	}
	return p, flags, count, nil
}

func (w *boltWalk) freelist(id uint64) error {
	p, _, count, err := w.read(id, boltFreelistPage)
	if err != nil {
		return fmt.Errorf("freelist: %w", err)
	}
	start, n := uint64(boltPageHeaderLen), uint64(count)
	if count == 0xffff { // the real count is the first element
		b, err := p.at(start, 8)
		if err != nil {
			return fmt.Errorf("freelist: %w", err)
		}
		start, n = start+8, ne.Uint64(b)
	}
	if n > (p.size-start)/8 {
		return fmt.Errorf("freelist: %d ids overrun page %d", n, id)
	}
	ids, err := p.at(start, n*8)
	if err != nil {
		return fmt.Errorf("freelist: %w", err)
	}
	for i := uint64(0); i < n; i++ {
		fid := ne.Uint64(ids[i*8:])
		if fid < 2 || fid >= w.hwm {
			return fmt.Errorf("freelist: page %d out of range", fid)
		}
		if bitSet(w.free, fid) || bitSet(w.reached, fid) {
			return fmt.Errorf("freelist: page %d listed twice or in use", fid)
		}
		setBit(w.free, fid)
	}
	return nil
}

// page walks the subtree at id: every key in [lo, hi) (nil: unbounded; lo
// nil also means id is the root of its tree). level is the bucket nesting:
// 0 the root bucket, 1 a top-level bucket. It returns the subtree's height
// (0: a leaf) and first key.
func (w *boltWalk) page(id uint64, lo, hi []byte, level, depth int) (int, []byte, error) {
	if depth > boltMaxDepth {
		return 0, nil, fmt.Errorf("page %d: tree deeper than %d", id, boltMaxDepth)
	}
	p, flags, count, err := w.read(id, boltBranchPage, boltLeafPage)
	if err != nil {
		return 0, nil, err
	}
	// bbolt removes a page that empties, by the key it had: an empty page
	// below a root has none, and would be freed while still linked.
	if count == 0 && lo != nil {
		return 0, nil, fmt.Errorf("page %d: empty, below the root", id)
	}
	height, first, err := w.elements(p, flags, count, lo, hi, level, depth)
	if err != nil {
		return 0, nil, fmt.Errorf("page %d: %w", id, err)
	}
	return height, first, nil
}

// elements checks the elements of page p and walks their subtrees; it
// returns the height and the first key of p's subtree. Beyond tx.Check's
// rules, two that bbolt's writes rely on (a file that breaks them makes
// bbolt free pages still linked, then panic): every leaf of a tree at one
// depth (rebalancing merges siblings), and a branch key equal to its child's
// first key (a child rewritten replaces its entry in the parent by that key).
func (w *boltWalk) elements(p *boltPage, flags, count uint16, lo, hi []byte, level, depth int) (height int, first []byte, err error) {
	n := uint64(count)
	if flags == boltBranchPage && n == 0 {
		return 0, nil, errors.New("empty branch")
	}
	if boltPageHeaderLen+n*boltElementLen > p.size {
		return 0, nil, fmt.Errorf("%d elements overrun the page", n)
	}
	key := func(i uint64) (elem, k []byte, err error) {
		eo := boltPageHeaderLen + i*boltElementLen
		if elem, err = p.at(eo, boltElementLen); err != nil {
			return nil, nil, err
		}
		var pos, ksize uint64
		if flags == boltBranchPage {
			pos, ksize = uint64(ne.Uint32(elem)), uint64(ne.Uint32(elem[4:]))
		} else {
			pos, ksize = uint64(ne.Uint32(elem[4:])), uint64(ne.Uint32(elem[8:]))
		}
		if ksize == 0 || ksize > boltMaxKeyLen {
			return nil, nil, fmt.Errorf("element %d: key of %d bytes", i, ksize)
		}
		if k, err = p.at(eo+pos, ksize); err != nil {
			return nil, nil, fmt.Errorf("element %d: key: %w", i, err)
		}
		return elem, k, nil
	}
	var prev []byte
	for i := uint64(0); i < n; i++ {
		elem, k, err := key(i)
		if err != nil {
			return 0, nil, err
		}
		switch {
		case lo != nil && bytes.Compare(k, lo) < 0:
			return 0, nil, fmt.Errorf("element %d: key below its parent's", i)
		case prev != nil && bytes.Compare(k, prev) <= 0:
			return 0, nil, fmt.Errorf("element %d: keys out of order", i)
		case hi != nil && bytes.Compare(k, hi) >= 0:
			return 0, nil, fmt.Errorf("element %d: key not below the next parent key", i)
		}
		if i == 0 {
			first = k
		}
		prev = k
		if flags == boltBranchPage {
			next := hi
			if i+1 < n {
				if _, next, err = key(i + 1); err != nil {
					return 0, nil, err
				}
			}
			h, childFirst, err := w.page(ne.Uint64(elem[8:]), k, next, level, depth+1)
			if err != nil {
				return 0, nil, err
			}
			if !bytes.Equal(childFirst, k) {
				return 0, nil, fmt.Errorf("element %d: key differs from its child's first key", i)
			}
			if i > 0 && h+1 != height {
				return 0, nil, fmt.Errorf("element %d: leaves at different depths", i)
			}
			height = h + 1
			continue
		}
		eflags, pos, ksize, vsize := ne.Uint32(elem), uint64(ne.Uint32(elem[4:])), uint64(ne.Uint32(elem[8:])), uint64(ne.Uint32(elem[12:]))
		voff := boltPageHeaderLen + i*boltElementLen + pos + ksize // inside the page: key checked it
		if vsize > p.size-voff {
			return 0, nil, fmt.Errorf("element %d: value of %d bytes overruns the page", i, vsize)
		}
		switch {
		case eflags == 0 && level == 0:
			return 0, nil, fmt.Errorf("element %d: a value in the root bucket", i)
		case eflags == 0:
			continue
		case eflags != boltBucketLeaf:
			return 0, nil, fmt.Errorf("element %d: flags %#x", i, eflags)
		case level > 0:
			return 0, nil, fmt.Errorf("element %d: a bucket inside a bucket (not a syncstore state)", i)
		}
		if err := w.bucket(p, voff, vsize, level, depth); err != nil {
			return 0, nil, fmt.Errorf("bucket %q: %w", k, err)
		}
	}
	return height, first, nil
}

// bucket checks a bucket value: its root page's tree, or its inline page.
func (w *boltWalk) bucket(p *boltPage, off, vsize uint64, level, depth int) error {
	if vsize < boltBucketLen {
		return fmt.Errorf("bucket value of %d bytes", vsize)
	}
	hdr, err := p.at(off, boltBucketLen)
	if err != nil {
		return err
	}
	if root := ne.Uint64(hdr); root != 0 {
		if vsize != boltBucketLen {
			return fmt.Errorf("bucket with root page %d and %d inline bytes", root, vsize-boltBucketLen)
		}
		_, _, err := w.page(root, nil, nil, level+1, depth+1)
		return err
	}
	// Inline: a leaf page inside the value (bbolt inlines only buckets
	// smaller than a quarter page).
	n := vsize - boltBucketLen
	if n < boltPageHeaderLen || n > w.pageSize {
		return fmt.Errorf("inline bucket of %d bytes", n)
	}
	b, err := p.at(off+boltBucketLen, n)
	if err != nil {
		return err
	}
	// bbolt writes an inline page with id 0 and no overflow, and frees the
	// page an inline bucket's id names once the bucket outgrows its value.
	if id, flags, overflow := ne.Uint64(b), ne.Uint16(b[8:]), ne.Uint32(b[12:]); id != 0 || flags != boltLeafPage || overflow != 0 {
		return fmt.Errorf("inline bucket page: id %d, type %#x, overflow %d; want a leaf 0 without overflow", id, flags, overflow)
	}
	inline := &boltPage{off: -1, size: n, head: b}
	_, _, err = w.elements(inline, boltLeafPage, ne.Uint16(b[10:]), nil, nil, level+1, depth+1)
	return err
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
