package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"

	"github.com/syncstore/syncstore/internal/durable"
)

// The WAL holds the Raft log entries of every data group on the node, in
// one sequence of segment files written by one goroutine: each commit is
// one write and one fdatasync, whatever the number of groups in it.
//
// A segment is a file "<id, 16 hex digits>.wal" of Options.WALSegmentBytes,
// preallocated so that a commit's fdatasync does not also journal a new
// file size:
//
//	header   "SSWAL1\x00\x00", segment id (uint64)
//	records  length (uint32), crc (uint32), previous crc (uint32), body
//	         (length bytes)
//	zeros    to the end of the file
//
// crc is the CRC-32C of the previous record's crc (4 bytes, the header's
// CRC for the first record) and the body, so the records of a segment form
// a chain: a record is valid only after the one it names, and bytes left
// past the end by an interrupted write never read as records. A body is a
// kind byte, the group (uint64), and
//
//	entry     index, term (uint64), type (uint8), appended at (Unix ns,
//	          int64), data length (uint32), data, extensions
//	truncate  index (uint64): drop entries from it on (0: all)
//	compact   index (uint64): drop entries up to it
//
// integers big-endian. Open replays every record in order into the index
// (walindex.go); a record that fails its check in the last segment is where
// an interrupted commit stopped (never acknowledged), and ends the log; in
// an earlier segment it is damage, and Open refuses to start.
//
// Segments are deleted oldest first, once no live entry is in them. A
// group whose live entries keep the oldest segment alive (it seldom
// compacts) is rewritten: its whole live log is appended again, after a
// truncate-all, so the old copies are dead.
const (
	walMagic        = "SSWAL1\x00\x00"
	walHeaderLen    = len(walMagic) + 8
	walRecordHeader = 12
	// DefaultWALSegmentBytes is a segment's preallocated size.
	DefaultWALSegmentBytes = 64 << 20
	// walMaxRecord bounds one record (an entry is at most a command of the
	// node's limits plus its frame).
	walMaxRecord = 64 << 20
	// walRewriteAbove: with more segments than this, the groups holding
	// the oldest segment alive are rewritten.
	walRewriteAbove = 8

	recEntry    = 1
	recTruncate = 2
	recCompact  = 3
)

// ErrWALDamaged marks a WAL that cannot be read past a damaged record in a
// segment before the last: the entries after it would be lost, so the node
// does not start on it.
var ErrWALDamaged = errors.New("storage: the Raft log (WAL) is damaged")

type segment struct {
	id   uint64
	f    *os.File
	size int64  // where the next record goes
	crc  uint32 // crc of the last record (or of the header)
}

type wal struct {
	dir      string
	log      *slog.Logger
	segBytes int64

	mu   sync.RWMutex // guards idx and segs against the writer; readers hold it to read
	idx  *walIndex
	segs []*segment // by id; the last is the active one

	reqs    chan *walReq
	closeMu sync.RWMutex
	closed  bool
	stopped chan struct{}
	failed  error // a write or fdatasync failed in a way that leaves the file unknown

	fsyncs   func(n int)
	onCommit func(CommitInfo)
}

// walReq is one caller's records, committed together with whatever else is
// queued.
type walReq struct {
	bodies [][]byte
	err    error
	done   chan struct{}
}

func openWAL(dir string, segBytes int64, log *slog.Logger, fsyncs func(int), onCommit func(CommitInfo)) (*wal, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	w := &wal{dir: dir, segBytes: segBytes, log: log, idx: newWALIndex(), reqs: make(chan *walReq, maxBatch), stopped: make(chan struct{}), fsyncs: fsyncs, onCommit: onCommit}
	if err := w.recover(); err != nil {
		w.closeFiles()
		return nil, err
	}
	go w.loop()
	return w, nil
}

func segmentName(id uint64) string { return fmt.Sprintf("%016x.wal", id) }

func (w *wal) recover() error {
	names, err := filepath.Glob(filepath.Join(w.dir, "*.wal"))
	if err != nil {
		return err
	}
	var ids []uint64
	for _, n := range names {
		id, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(n), ".wal"), 16, 64)
		if err != nil {
			return fmt.Errorf("%w: unexpected file %s", ErrWALDamaged, n)
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for i, id := range ids {
		last := i == len(ids)-1
		seg, err := w.replay(id, last)
		if err != nil {
			return err
		}
		w.segs = append(w.segs, seg)
	}
	if len(w.segs) == 0 {
		return w.rotate(1)
	}
	return nil
}

// replay reads segment id into the index.
func (w *wal) replay(id uint64, last bool) (*segment, error) {
	path := filepath.Join(w.dir, segmentName(id))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	seg := &segment{id: id, f: f}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	header := make([]byte, walHeaderLen)
	if _, err := f.ReadAt(header, 0); err != nil || string(header[:len(walMagic)]) != walMagic || binary.BigEndian.Uint64(header[len(walMagic):]) != id {
		if !last {
			f.Close()
			return nil, fmt.Errorf("%w: segment %s has no valid header", ErrWALDamaged, path)
		}
		// Created, but its header never made it: an empty segment.
		if err := w.initSegment(seg); err != nil {
			f.Close()
			return nil, err
		}
		return seg, nil
	}
	seg.crc = crc32.Checksum(header, castagnoli)
	seg.size = int64(walHeaderLen)
	r := io.NewSectionReader(f, 0, st.Size())
	buf := make([]byte, 0, 64<<10)
	var hdr [walRecordHeader]byte
	for {
		off := seg.size
		if _, err := r.ReadAt(hdr[:], off); err != nil {
			break // end of file
		}
		n := int64(binary.BigEndian.Uint32(hdr[:4]))
		if n == 0 {
			break // zeros: the end
		}
		bad := n > walMaxRecord || off+walRecordHeader+n > st.Size() || binary.BigEndian.Uint32(hdr[8:]) != seg.crc
		if !bad {
			buf = slices.Grow(buf[:0], int(n))[:n]
			if _, err := r.ReadAt(buf, off+walRecordHeader); err != nil {
				bad = true
			} else if recordCRC(seg.crc, buf) != binary.BigEndian.Uint32(hdr[4:]) {
				bad = true
			}
		}
		if bad {
			if !last {
				f.Close()
				return nil, fmt.Errorf("%w: segment %s, record at offset %d fails its check; the records after it cannot be trusted", ErrWALDamaged, path, off)
			}
			w.log.Warn("storage: the WAL ends with an interrupted write (never acknowledged): dropped", "segment", path, "offset", off)
			break
		}
		if err := w.apply(buf, loc{seg: id, off: off, n: int(walRecordHeader + n)}); err != nil {
			f.Close()
			return nil, fmt.Errorf("%w: segment %s, record at offset %d: %w", ErrWALDamaged, path, off, err)
		}
		seg.crc = binary.BigEndian.Uint32(hdr[4:])
		seg.size = off + walRecordHeader + n
	}
	if last {
		if err := zeroTail(f, seg.size, st.Size()); err != nil {
			f.Close()
			return nil, fmt.Errorf("storage: zero the WAL's tail: %w", err)
		}
	}
	return seg, nil
}

// zeroTail zeroes what is not zero in f from off to size: what an
// interrupted write may have left past the end, so that no later write is
// followed by bytes of an older one. The chain of CRCs already keeps such
// bytes from reading as records; this keeps the file as Open describes it.
func zeroTail(f *os.File, off, size int64) error {
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	zeros := make([]byte, chunk)
	wrote := false
	for ; off < size; off += chunk {
		n := int(min(chunk, size-off))
		if _, err := f.ReadAt(buf[:n], off); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if !slices.Equal(buf[:n], zeros[:n]) {
			if _, err := f.WriteAt(zeros[:n], off); err != nil {
				return err
			}
			wrote = true
		}
	}
	if wrote {
		return syscall.Fdatasync(int(f.Fd()))
	}
	return nil
}

func recordCRC(prev uint32, body []byte) uint32 {
	var p [4]byte
	binary.BigEndian.PutUint32(p[:], prev)
	return crc32.Update(crc32.Checksum(p[:], castagnoli), castagnoli, body)
}

// apply updates the index for one record body stored at l.
func (w *wal) apply(body []byte, l loc) error {
	if len(body) < 17 {
		return fmt.Errorf("record of %d bytes", len(body))
	}
	group, index := binary.BigEndian.Uint64(body[1:]), binary.BigEndian.Uint64(body[9:])
	switch body[0] {
	case recEntry:
		if len(body) < entryBodyLen {
			return fmt.Errorf("entry of %d bytes", len(body))
		}
		w.idx.entry(group, index, l)
	case recTruncate:
		w.idx.truncate(group, index)
	case recCompact:
		w.idx.compact(group, index)
	default:
		return fmt.Errorf("unknown record kind %d", body[0])
	}
	return nil
}

// entryBodyLen is an entry body without data and extensions.
const entryBodyLen = 1 + 8 + 8 + 8 + 1 + 8 + 4

func encodeEntryRecord(group uint64, e *raft.Log) []byte {
	b := make([]byte, entryBodyLen, entryBodyLen+len(e.Data)+len(e.Extensions))
	b[0] = recEntry
	binary.BigEndian.PutUint64(b[1:], group)
	binary.BigEndian.PutUint64(b[9:], e.Index)
	binary.BigEndian.PutUint64(b[17:], e.Term)
	b[25] = byte(e.Type)
	var at int64
	if !e.AppendedAt.IsZero() {
		at = e.AppendedAt.UnixNano()
	}
	binary.BigEndian.PutUint64(b[26:], uint64(at))
	binary.BigEndian.PutUint32(b[34:], uint32(len(e.Data)))
	return append(append(b, e.Data...), e.Extensions...)
}

func encodeRangeRecord(kind byte, group, index uint64) []byte {
	b := make([]byte, 17)
	b[0] = kind
	binary.BigEndian.PutUint64(b[1:], group)
	binary.BigEndian.PutUint64(b[9:], index)
	return b
}

// decodeEntryRecord checks a record read back for an entry and copies it
// into out.
func decodeEntryRecord(rec []byte, group, index uint64, out *raft.Log) error {
	if len(rec) < walRecordHeader+entryBodyLen {
		return fmt.Errorf("%w: entry record of %d bytes", ErrCorrupt, len(rec))
	}
	body := rec[walRecordHeader:]
	if int(binary.BigEndian.Uint32(rec)) != len(body) || recordCRC(binary.BigEndian.Uint32(rec[8:]), body) != binary.BigEndian.Uint32(rec[4:]) {
		return fmt.Errorf("%w: entry record checksum mismatch", ErrCorrupt)
	}
	if body[0] != recEntry || binary.BigEndian.Uint64(body[1:]) != group || binary.BigEndian.Uint64(body[9:]) != index {
		return fmt.Errorf("%w: the record there is not entry %d of group %d", ErrCorrupt, index, group)
	}
	n := int(binary.BigEndian.Uint32(body[34:]))
	if n > len(body)-entryBodyLen {
		return fmt.Errorf("%w: data length %d past the record", ErrCorrupt, n)
	}
	out.Index = index
	out.Term = binary.BigEndian.Uint64(body[17:])
	out.Type = raft.LogType(body[25])
	out.AppendedAt = time.Time{}
	if at := int64(binary.BigEndian.Uint64(body[26:])); at != 0 {
		out.AppendedAt = time.Unix(0, at)
	}
	rest := body[entryBodyLen:]
	out.Data = append([]byte(nil), rest[:n]...)
	out.Extensions = nil
	if len(rest) > n {
		out.Extensions = append([]byte(nil), rest[n:]...)
	}
	return nil
}

// read copies entry index of group into out.
func (w *wal) read(group, index uint64, out *raft.Log) error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	l, ok := w.idx.at(group, index)
	if !ok {
		return raft.ErrLogNotFound
	}
	seg := w.segment(l.seg)
	if seg == nil {
		return fmt.Errorf("%w: entry %d of group %d is in segment %d, which is gone", ErrCorrupt, index, group, l.seg)
	}
	rec := make([]byte, l.n)
	if _, err := seg.f.ReadAt(rec, l.off); err != nil {
		return fmt.Errorf("storage: read WAL segment %d: %w", l.seg, err)
	}
	return decodeEntryRecord(rec, group, index, out)
}

func (w *wal) segment(id uint64) *segment {
	i, ok := slices.BinarySearchFunc(w.segs, id, func(s *segment, id uint64) int {
		switch {
		case s.id < id:
			return -1
		case s.id > id:
			return 1
		}
		return 0
	})
	if !ok {
		return nil
	}
	return w.segs[i]
}

func (w *wal) bounds(group uint64) (first, last uint64) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if g := w.idx.groups[group]; g != nil {
		return g.bounds()
	}
	return 0, 0
}

// recentEntryBytes is the mean record size of the group's last n entries
// (0 for an empty log).
func (w *wal) recentEntryBytes(group uint64, n int) int {
	w.mu.RLock()
	defer w.mu.RUnlock()
	g := w.idx.groups[group]
	if g == nil || len(g.locs) == 0 {
		return 0
	}
	tail := g.locs[max(0, len(g.locs)-n):]
	sum := 0
	for _, l := range tail {
		sum += l.n
	}
	return sum / len(tail)
}

// commit appends bodies as records and returns once they are durable.
func (w *wal) commit(bodies [][]byte) error {
	r := &walReq{bodies: bodies, done: make(chan struct{})}
	w.closeMu.RLock()
	if w.closed {
		w.closeMu.RUnlock()
		return ErrClosed
	}
	w.reqs <- r
	w.closeMu.RUnlock()
	<-r.done
	return r.err
}

func (w *wal) loop() {
	defer close(w.stopped)
	batch := make([]*walReq, 0, maxBatch)
	for {
		r, ok := <-w.reqs
		if !ok {
			return
		}
		batch = append(batch[:0], r)
		drainReady(w.reqs, func() bool { return len(batch) < maxBatch }, func(r *walReq) { batch = append(batch, r) })
		err := w.write(batch)
		for _, r := range batch {
			r.err = err
			close(r.done)
		}
		clear(batch)
		if err == nil {
			w.collect()
		}
	}
}

// write appends the batch's records to the active segment (a fresh one if
// they do not fit), fdatasyncs, and only then applies them to the index.
func (w *wal) write(batch []*walReq) error {
	if w.failed != nil {
		return w.failed
	}
	seg := w.segs[len(w.segs)-1]
	size := 0
	for _, r := range batch {
		for _, b := range r.bodies {
			size += walRecordHeader + len(b)
		}
	}
	if seg.size > int64(walHeaderLen) && seg.size+int64(size) > w.segBytes {
		if err := w.rotate(seg.id + 1); err != nil {
			return err
		}
		seg = w.segs[len(w.segs)-1]
	}
	buf := make([]byte, 0, size)
	type placed struct {
		body []byte
		l    loc
	}
	records := make([]placed, 0, len(batch))
	crc := seg.crc
	for _, r := range batch {
		for _, b := range r.bodies {
			if len(b) > walMaxRecord {
				return fmt.Errorf("storage: a WAL record of %d bytes (at most %d)", len(b), walMaxRecord)
			}
			off := seg.size + int64(len(buf))
			next := recordCRC(crc, b)
			buf = binary.BigEndian.AppendUint32(buf, uint32(len(b)))
			buf = binary.BigEndian.AppendUint32(buf, next)
			buf = binary.BigEndian.AppendUint32(buf, crc)
			buf = append(buf, b...)
			crc = next
			records = append(records, placed{b, loc{seg: seg.id, off: off, n: walRecordHeader + len(b)}})
		}
	}
	if _, err := seg.f.WriteAt(buf, seg.size); err != nil {
		// Nothing of it counts: the offset stays, and a shorter write there
		// later breaks the chain to whatever of this one landed.
		return fmt.Errorf("storage: write the WAL: %w", err)
	}
	if err := syscall.Fdatasync(int(seg.f.Fd())); err != nil {
		// After a failed fdatasync the file's state is unknown (the kernel
		// may have dropped the pages): stop writing until a restart
		// replays what is really there.
		w.failed = fmt.Errorf("storage: fdatasync of the WAL failed; restart the node: %w", err)
		return w.failed
	}
	w.fsyncs(1)
	w.mu.Lock()
	for _, p := range records {
		_ = w.apply(p.body, p.l) // our own encoding: cannot fail
	}
	seg.size += int64(len(buf))
	seg.crc = crc
	w.mu.Unlock()
	if w.onCommit != nil {
		w.onCommit(CommitInfo{Store: "log", Requests: len(batch), Fsyncs: 1})
	}
	return nil
}

// rotate starts segment id as the active one.
func (w *wal) rotate(id uint64) error {
	path := filepath.Join(w.dir, segmentName(id))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("storage: new WAL segment: %w", err)
	}
	seg := &segment{id: id, f: f}
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, w.segBytes); err != nil && !errors.Is(err, syscall.EOPNOTSUPP) {
		// Short of space (or a filesystem without it): the segment grows
		// as it is written instead, each fdatasync then also recording
		// the new size.
		w.log.Warn("storage: cannot preallocate a WAL segment; it grows as written", "segment", path, "err", err)
	}
	if err := w.initSegment(seg); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := durable.SyncDir(w.dir); err != nil {
		f.Close()
		return err
	}
	w.fsyncs(2)
	w.mu.Lock()
	w.segs = append(w.segs, seg)
	w.mu.Unlock()
	return nil
}

// initSegment writes a segment's header (made durable by its first
// commit's fdatasync; a segment whose header is lost is empty anyway).
func (w *wal) initSegment(seg *segment) error {
	header := binary.BigEndian.AppendUint64([]byte(walMagic), seg.id)
	if _, err := seg.f.WriteAt(header, 0); err != nil {
		return fmt.Errorf("storage: WAL segment header: %w", err)
	}
	if err := syscall.Fdatasync(int(seg.f.Fd())); err != nil {
		return err
	}
	seg.size = int64(walHeaderLen)
	seg.crc = crc32.Checksum(header, castagnoli)
	return nil
}

// collect deletes the oldest segments while they hold no live entry, and
// rewrites the groups that keep the oldest one alive while there are too
// many segments.
func (w *wal) collect() {
	for len(w.segs) > 1 {
		oldest := w.segs[0]
		w.mu.RLock()
		live := w.idx.live[oldest.id]
		w.mu.RUnlock()
		if live == 0 {
			if err := w.deleteOldest(); err != nil {
				w.log.Error("storage: delete a WAL segment", "segment", oldest.id, "err", err)
				return
			}
			continue
		}
		if len(w.segs) <= walRewriteAbove {
			return
		}
		if err := w.rewriteHolders(oldest.id); err != nil {
			w.log.Error("storage: rewrite the groups holding the oldest WAL segment", "segment", oldest.id, "err", err)
			return
		}
		w.mu.RLock()
		live = w.idx.live[oldest.id]
		w.mu.RUnlock()
		if live != 0 {
			w.log.Error("storage: the oldest WAL segment is still live after a rewrite", "segment", oldest.id, "live", live)
			return
		}
	}
}

func (w *wal) deleteOldest() error {
	w.mu.Lock()
	seg := w.segs[0]
	w.segs = w.segs[1:]
	delete(w.idx.live, seg.id)
	w.mu.Unlock()
	seg.f.Close()
	if err := os.Remove(seg.f.Name()); err != nil {
		return err
	}
	if err := durable.SyncDir(w.dir); err != nil {
		return err
	}
	w.fsyncs(1)
	return nil
}

// rewriteHolders appends again, after a truncate-all, the whole live log of
// every group with an entry in segment id.
func (w *wal) rewriteHolders(id uint64) error {
	w.mu.RLock()
	var holders []uint64
	for g, gi := range w.idx.groups {
		if slices.ContainsFunc(gi.locs, func(l loc) bool { return l.seg == id }) {
			holders = append(holders, g)
		}
	}
	w.mu.RUnlock()
	slices.Sort(holders)
	for _, g := range holders {
		first, last := w.bounds(g)
		bodies := [][]byte{encodeRangeRecord(recTruncate, g, 0)}
		for i := first; i <= last && first != 0; i++ {
			var e raft.Log
			if err := w.read(g, i, &e); err != nil {
				return fmt.Errorf("group %d entry %d: %w", g, i, err)
			}
			bodies = append(bodies, encodeEntryRecord(g, &e))
		}
		if err := w.write([]*walReq{{bodies: bodies}}); err != nil {
			return err
		}
		w.log.Info("storage: rewrote a group's log to free the oldest WAL segment", "group", g, "entries", last-first+1, "segment", id)
	}
	return nil
}

// close stops the writer after what is queued and closes the segments.
func (w *wal) close() error {
	w.closeMu.Lock()
	if !w.closed {
		w.closed = true
		close(w.reqs)
	}
	w.closeMu.Unlock()
	<-w.stopped
	return w.closeFiles()
}

func (w *wal) closeFiles() error {
	var errs []error
	for _, s := range w.segs {
		errs = append(errs, s.f.Close())
	}
	w.segs = nil
	return errors.Join(errs...)
}
