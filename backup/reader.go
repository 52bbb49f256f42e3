package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
)

// Reader reads a backup through an io.ReaderAt. Its methods may be called
// from several goroutines: each part stream keeps its own position.
type Reader struct {
	ra       io.ReaderAt
	manifest Manifest
	dataEnd  int64 // where the manifest starts
	closer   io.Closer
}

// Open reads the header, the trailer and the manifest and checks them: a
// file without a complete trailer is refused as ErrTruncated, one whose
// manifest does not match its checksum as ErrChecksum. Parts are checked
// as they are read (Part) or all at once (Verify).
func Open(ra io.ReaderAt, size int64) (*Reader, error) {
	if size < int64(headerLen+trailerLen) {
		return nil, fmt.Errorf("backup: %w: %d bytes, shorter than a header and a trailer", ErrTruncated, size)
	}
	hdr := make([]byte, headerLen)
	if err := readFull(ra, hdr, 0); err != nil {
		return nil, fmt.Errorf("backup: read header: %w", err)
	}
	if !bytes.HasPrefix(hdr, []byte(fileMagic)) {
		return nil, fmt.Errorf("backup: header: %w: not a syncstore backup", ErrUnknownFormat)
	}
	if v := binary.BigEndian.Uint16(hdr[len(fileMagic):]); v != FormatVersion {
		return nil, fmt.Errorf("backup: header: %w: format version %d, this binary reads %d", ErrUnknownFormat, v, FormatVersion)
	}
	tr := make([]byte, trailerLen)
	if err := readFull(ra, tr, size-trailerLen); err != nil {
		return nil, fmt.Errorf("backup: read trailer: %w", err)
	}
	if string(tr[40:]) != endMagic {
		return nil, fmt.Errorf("backup: %w: no end marker (the file was cut short or never finished)", ErrTruncated)
	}
	mlen := binary.BigEndian.Uint64(tr)
	if mlen > uint64(size-int64(headerLen+trailerLen)) || mlen > maxManifest {
		return nil, fmt.Errorf("backup: trailer: %w: manifest length %d in a file of %d bytes", ErrCorrupt, mlen, size)
	}
	dataEnd := size - trailerLen - int64(mlen)
	raw := make([]byte, mlen)
	if err := readFull(ra, raw, dataEnd); err != nil {
		return nil, fmt.Errorf("backup: read manifest: %w", err)
	}
	if sum := sha256.Sum256(raw); !bytes.Equal(sum[:], tr[8:40]) {
		return nil, fmt.Errorf("backup: manifest: %w", ErrChecksum)
	}
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("backup: manifest: %w: %w", ErrCorrupt, err)
	}
	if err := m.check(dataEnd); err != nil {
		return nil, err
	}
	return &Reader{ra: ra, manifest: m, dataEnd: dataEnd}, nil
}

// OpenFile opens the backup at path; Close closes the file.
func OpenFile(path string) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	st, err := f.Stat()
	if err == nil {
		var r *Reader
		if r, err = Open(f, st.Size()); err == nil {
			r.closer = f
			return r, nil
		}
	}
	f.Close()
	return nil, err
}

// Close closes the file OpenFile opened (and does nothing after Open).
func (r *Reader) Close() error {
	if r.closer == nil {
		return nil
	}
	return r.closer.Close()
}

// Manifest is the backup's manifest (a copy).
func (r *Reader) Manifest() Manifest {
	m := r.manifest
	m.Parts = append([]PartInfo(nil), m.Parts...)
	return m
}

// Part streams a part's bytes. Each frame is checked before its bytes are
// returned; the stream ends with io.EOF only once the part's length and
// SHA-256 match the manifest, and otherwise fails with a *PartError.
func (r *Reader) Part(name string) (io.Reader, error) {
	info, ok := r.manifest.Part(name)
	if !ok {
		return nil, partErr(name, ErrMissingPart, "not in the manifest")
	}
	if info.Offset == r.dataEnd {
		return nil, partErr(name, ErrMissingPart, "listed after the last part in the file")
	}
	got, pos, err := r.readBegin(info.Offset)
	if err != nil {
		return nil, partErr(name, err, "")
	}
	if got != name {
		return nil, partErr(name, ErrMissingPart, "part %q is at its offset %d", got, info.Offset)
	}
	return r.partReader(info, pos), nil
}

// Verify reads every part through and checks every checksum, and that the
// file holds each part the manifest lists exactly once and nothing else.
func (r *Reader) Verify() error {
	byName := make(map[string]PartInfo, len(r.manifest.Parts))
	for _, p := range r.manifest.Parts {
		byName[p.Name] = p
	}
	seen := make(map[string]bool, len(byName))
	for pos := int64(headerLen); pos < r.dataEnd; {
		name, next, err := r.readBegin(pos)
		if err != nil {
			return r.atOffset(pos, err)
		}
		info, listed := byName[name]
		switch {
		case !listed:
			return partErr(name, ErrUnknownPart, "at offset %d", pos)
		case seen[name]:
			return partErr(name, ErrDuplicatePart, "again at offset %d", pos)
		case info.Offset != pos:
			return partErr(name, ErrCorrupt, "at offset %d, the manifest says %d", pos, info.Offset)
		}
		seen[name] = true
		pr := r.partReader(info, next)
		if _, err := io.Copy(io.Discard, pr); err != nil {
			return err
		}
		pos = pr.pos
	}
	for _, p := range r.manifest.Parts {
		if !seen[p.Name] {
			return partErr(p.Name, ErrMissingPart, "listed in the manifest, absent from the file")
		}
	}
	return nil
}

// Verify opens and verifies the backup at path, and returns its manifest:
// also with an error about a part, once the manifest itself checked out
// (so a caller can show what the backup was meant to hold).
func Verify(path string) (Manifest, error) {
	r, err := OpenFile(path)
	if err != nil {
		return Manifest{}, err
	}
	defer r.Close()
	return r.Manifest(), r.Verify()
}

// atOffset names the part whose begin record should be at pos, for damage
// found there.
func (r *Reader) atOffset(pos int64, err error) error {
	for _, p := range r.manifest.Parts {
		if p.Offset == pos {
			return partErr(p.Name, err, "")
		}
	}
	return fmt.Errorf("backup: at offset %d: %w", pos, err)
}

// readAt reads n bytes at pos, refusing a record that runs into the
// manifest.
func (r *Reader) readAt(buf []byte, pos int64) error {
	if pos < 0 || pos > r.dataEnd-int64(len(buf)) {
		return fmt.Errorf("%w: record at offset %d runs past the parts", ErrCorrupt, pos)
	}
	if err := readFull(r.ra, buf, pos); err != nil {
		return fmt.Errorf("read at offset %d: %w", pos, err)
	}
	return nil
}

func checkCRC(rec []byte, pos int64) error {
	body := rec[:len(rec)-crcLen]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(rec[len(body):]) {
		return fmt.Errorf("%w: record at offset %d", ErrChecksum, pos)
	}
	return nil
}

// readFull is ReadAt, taking the io.EOF a ReaderAt may return with a full
// read at the end of its input as success.
func readFull(ra io.ReaderAt, buf []byte, off int64) error {
	n, err := ra.ReadAt(buf, off)
	if n == len(buf) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// readBegin reads a part's begin record at pos: its name and where its
// first frame is.
func (r *Reader) readBegin(pos int64) (string, int64, error) {
	var fixed [3]byte
	if err := r.readAt(fixed[:], pos); err != nil {
		return "", 0, err
	}
	if fixed[0] != recBegin {
		return "", 0, fmt.Errorf("%w: record %#x at offset %d, want a part's begin", ErrCorrupt, fixed[0], pos)
	}
	n := int(binary.BigEndian.Uint16(fixed[1:]))
	rec := make([]byte, len(fixed)+n+crcLen)
	copy(rec, fixed[:])
	if err := r.readAt(rec[len(fixed):], pos+int64(len(fixed))); err != nil {
		return "", 0, err
	}
	if err := checkCRC(rec, pos); err != nil {
		return "", 0, err
	}
	return string(rec[len(fixed) : len(fixed)+n]), pos + int64(len(rec)), nil
}

func (r *Reader) partReader(info PartInfo, pos int64) *partReader {
	return &partReader{r: r, info: info, pos: pos, h: sha256.New()}
}

// partReader streams a part's frames from pos, one frame in memory.
type partReader struct {
	r    *Reader
	info PartInfo
	pos  int64
	h    hash.Hash
	n    int64
	buf  []byte
	cur  []byte // what is left of the current frame
	err  error  // sticky; io.EOF once the part checked out
}

func (p *partReader) Read(b []byte) (int, error) {
	for len(p.cur) == 0 && p.err == nil {
		if err := p.next(); err != nil {
			p.err = err
			if err != io.EOF {
				p.err = partErr(p.info.Name, err, "")
			}
		}
	}
	if len(p.cur) > 0 {
		n := copy(b, p.cur)
		p.cur = p.cur[n:]
		return n, nil
	}
	return 0, p.err
}

// next reads the record at pos: a data frame into cur, or the end record,
// which it checks against what was read and the manifest (io.EOF if both
// match).
func (p *partReader) next() error {
	var hdr [dataHeaderLen]byte
	if err := p.r.readAt(hdr[:], p.pos); err != nil {
		return err
	}
	switch hdr[0] {
	case recData:
		n := int64(binary.BigEndian.Uint32(hdr[1:]))
		if n == 0 || n > MaxFrame {
			return fmt.Errorf("%w: frame of %d bytes at offset %d", ErrCorrupt, n, p.pos)
		}
		if p.n+n > p.info.Length {
			return fmt.Errorf("%w: longer than the manifest's %d bytes (frame at offset %d)", ErrChecksum, p.info.Length, p.pos)
		}
		if cap(p.buf) < int(dataHeaderLen+n+crcLen) {
			p.buf = make([]byte, dataHeaderLen+n+crcLen)
		}
		rec := p.buf[:dataHeaderLen+n+crcLen]
		copy(rec, hdr[:])
		if err := p.r.readAt(rec[dataHeaderLen:], p.pos+dataHeaderLen); err != nil {
			return err
		}
		if err := checkCRC(rec, p.pos); err != nil {
			return err
		}
		p.cur = rec[dataHeaderLen : dataHeaderLen+n]
		p.h.Write(p.cur)
		p.n += n
		p.pos += int64(len(rec))
		return nil
	case recEnd:
		rec := make([]byte, endRecLen)
		if err := p.r.readAt(rec, p.pos); err != nil {
			return err
		}
		if err := checkCRC(rec, p.pos); err != nil {
			return err
		}
		sum := p.h.Sum(nil)
		length := binary.BigEndian.Uint64(rec[1:9])
		if length != uint64(p.n) || !bytes.Equal(sum, rec[9:41]) {
			return fmt.Errorf("%w: read %d bytes, the end record says %d", ErrChecksum, p.n, length)
		}
		if p.n != p.info.Length || hex.EncodeToString(sum) != p.info.SHA256 {
			return fmt.Errorf("%w: %d bytes with sha256 %x, the manifest says %d with %s", ErrChecksum, p.n, sum, p.info.Length, p.info.SHA256)
		}
		p.pos += endRecLen
		return io.EOF
	default:
		return fmt.Errorf("%w: record %#x at offset %d", ErrCorrupt, hdr[0], p.pos)
	}
}
