package backup

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"sync/atomic"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Writer writes a backup: NewWriter, then Part for each part (one open at a
// time, each closed before the next), then Close. It holds at most one
// frame (MaxFrame) of a part, whatever the part's size.
type Writer struct {
	w        io.Writer
	written  atomic.Int64
	manifest Manifest
	names    map[string]bool
	groups   map[uint64]string
	open     *partWriter
	buf      []byte // one frame with its header and CRC, reused by every part
	err      error  // sticky: the first failed write to w
	closed   bool

	// frameSize is MaxFrame; tests lower it to get many frames from
	// small parts.
	frameSize int
}

// NewWriter writes the file header to w and returns a Writer for the parts.
// Nothing is buffered: each record reaches w in one Write as it is made.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	if h.ClusterID == "" {
		return nil, errors.New("backup: new writer: empty cluster id")
	}
	bw := &Writer{
		w: w,
		manifest: Manifest{
			FormatVersion:   FormatVersion,
			ClusterID:       h.ClusterID,
			Created:         h.Created,
			ShardMapVersion: h.ShardMapVersion,
			Parts:           []PartInfo{},
		},
		names:     map[string]bool{},
		groups:    map[uint64]string{},
		frameSize: MaxFrame,
	}
	if err := bw.write(bw.header()); err != nil {
		return nil, fmt.Errorf("backup: write header: %w", err)
	}
	return bw, nil
}

func (w *Writer) header() []byte {
	return binary.BigEndian.AppendUint16([]byte(fileMagic), uint16(w.manifest.FormatVersion))
}

// Bytes is how many bytes have been written to the underlying writer so
// far. It may be called from any goroutine (for a progress bar).
func (w *Writer) Bytes() int64 { return w.written.Load() }

// Manifest is the manifest of the parts closed so far (all of them, once
// Close has returned).
func (w *Writer) Manifest() Manifest {
	m := w.manifest
	m.Parts = append([]PartInfo(nil), m.Parts...)
	return m
}

func (w *Writer) write(b []byte) error {
	if w.err != nil {
		return w.err
	}
	n, err := w.w.Write(b)
	w.written.Add(int64(n))
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	w.err = err
	return err
}

// record writes one record: b with its CRC-32C appended.
func (w *Writer) record(b []byte) error {
	return w.write(binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)))
}

// Part starts a part. Its bytes are written to the returned WriteCloser and
// framed as they come; Close ends the part and adds it to the manifest. A
// refused name or meta leaves the Writer as it was.
func (w *Writer) Part(name string, meta PartMeta) (io.WriteCloser, error) {
	switch {
	case w.closed:
		return nil, fmt.Errorf("backup: part %q: writer closed", name)
	case w.open != nil:
		return nil, fmt.Errorf("backup: part %q: part %q still open", name, w.open.info.Name)
	case w.err != nil:
		return nil, fmt.Errorf("backup: part %q: earlier write failed: %w", name, w.err)
	}
	if err := checkName(name); err != nil {
		return nil, err
	}
	if w.names[name] {
		return nil, partErr(name, ErrDuplicatePart, "")
	}
	if err := checkMeta(meta); err != nil {
		return nil, partErr(name, errors.New("bad part"), "%v", err)
	}
	if other, ok := w.groups[meta.GroupID]; ok {
		return nil, partErr(name, ErrDuplicatePart, "group %d already in part %q", meta.GroupID, other)
	}
	meta.Ranges = append([]SlotRange(nil), meta.Ranges...)
	pw := &partWriter{w: w, info: PartInfo{Name: name, PartMeta: meta, Offset: w.Bytes()}, h: sha256.New()}
	rec := binary.BigEndian.AppendUint16([]byte{recBegin}, uint16(len(name)))
	if err := w.record(append(rec, name...)); err != nil {
		return nil, partErr(name, err, "")
	}
	w.names[name] = true
	w.groups[meta.GroupID] = name
	if w.buf == nil {
		w.buf = make([]byte, dataHeaderLen, dataHeaderLen+w.frameSize+crcLen)
	}
	w.buf = w.buf[:dataHeaderLen]
	w.open = pw
	return pw, nil
}

type partWriter struct {
	w      *Writer
	info   PartInfo
	h      hash.Hash
	closed bool
}

func (p *partWriter) Write(b []byte) (int, error) {
	if p.closed {
		return 0, partErr(p.info.Name, errors.New("write after close"), "")
	}
	w := p.w
	n := 0
	for len(b) > 0 {
		take := min(len(b), dataHeaderLen+w.frameSize-len(w.buf))
		w.buf = append(w.buf, b[:take]...)
		b = b[take:]
		if len(w.buf) == dataHeaderLen+w.frameSize {
			if err := p.flush(); err != nil {
				return n, err
			}
		}
		n += take
	}
	return n, nil
}

// flush writes the buffered bytes as one data frame.
func (p *partWriter) flush() error {
	w := p.w
	data := w.buf[dataHeaderLen:]
	if len(data) == 0 {
		return nil
	}
	w.buf[0] = recData
	binary.BigEndian.PutUint32(w.buf[1:dataHeaderLen], uint32(len(data)))
	p.h.Write(data)
	p.info.Length += int64(len(data))
	err := w.record(w.buf)
	w.buf = w.buf[:dataHeaderLen]
	if err != nil {
		return partErr(p.info.Name, err, "")
	}
	return nil
}

// Close writes the last frame and the part's end record. After an error
// the backup is unusable (Writer.Close fails too).
func (p *partWriter) Close() error {
	if p.closed {
		return partErr(p.info.Name, errors.New("closed twice"), "")
	}
	p.closed = true
	p.w.open = nil
	if err := p.flush(); err != nil {
		return err
	}
	sum := p.h.Sum(nil)
	rec := binary.BigEndian.AppendUint64([]byte{recEnd}, uint64(p.info.Length))
	if err := p.w.record(append(rec, sum...)); err != nil {
		return partErr(p.info.Name, err, "")
	}
	p.info.SHA256 = hex.EncodeToString(sum)
	p.w.manifest.Parts = append(p.w.manifest.Parts, p.info)
	return nil
}

// Close writes the manifest and the trailer; only then is the file a
// backup (one without them is refused as truncated). It does not close
// the underlying writer.
func (w *Writer) Close() error {
	switch {
	case w.closed:
		return errors.New("backup: close: already closed")
	case w.open != nil:
		return fmt.Errorf("backup: close: part %q still open", w.open.info.Name)
	case w.err != nil:
		return fmt.Errorf("backup: close: earlier write failed: %w", w.err)
	}
	w.closed = true
	m, err := json.Marshal(w.manifest)
	if err != nil {
		return fmt.Errorf("backup: manifest: %w", err)
	}
	sum := sha256.Sum256(m)
	trailer := binary.BigEndian.AppendUint64(nil, uint64(len(m)))
	trailer = append(append(trailer, sum[:]...), endMagic...)
	if err := w.write(m); err != nil {
		return fmt.Errorf("backup: write manifest: %w", err)
	}
	if err := w.write(trailer); err != nil {
		return fmt.Errorf("backup: write trailer: %w", err)
	}
	return nil
}
