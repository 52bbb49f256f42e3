package boltcheck

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
)

// The bbolt v1.4 file format, as far as File needs it (from
// go.etcd.io/bbolt/internal/common: page.go, meta.go, bucket.go). bbolt
// writes its structs in the machine's byte order. TestLayout pins these
// against a file bbolt wrote; a bbolt upgrade must pass it and
// TestFileAcceptsWhatBboltWrites (see DESIGN.md).
const (
	pageHeaderLen = 16 // id u64, flags u16, count u16, overflow u32
	elementLen    = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags, pos, ksize, vsize u32
	metaLen       = 64 // magic, version, pageSize, flags u32; root, sequence, freelist, pgid, txid, checksum u64
	bucketLen     = 16 // root pgid u64, sequence u64
	magic         = 0xED0CDAED
	formatVersion = 2

	branchPage     = 0x01
	leafPage       = 0x02
	metaPage       = 0x04
	freelistPage   = 0x10
	bucketLeafFlag = 0x01
	noFreelist     = math.MaxUint64

	minPageSize = 1 << 10
	maxPageSize = 1 << 16
	maxKeyLen   = 32768 // bolt.MaxKeySize
	// maxDepth bounds branch levels plus bucket nesting; a real file is a
	// handful deep.
	maxDepth = 64
	// pageBuf is how much of a page is read at once; the elements of a page
	// always fit (65535 elements of 16 bytes), bigger values are read when
	// needed.
	pageBuf = 1 << 20
)

// HeaderLen is how many bytes LooksLikeBolt needs: the header of page 0 and
// the meta it holds.
const HeaderLen = pageHeaderLen + metaLen

var ne = binary.NativeEndian

// LooksLikeBolt says whether b starts like a bbolt file: page 0, a meta
// page, bbolt's magic. It is a quick test of a stream's first HeaderLen
// bytes, not a check: only File says a file is sound.
func LooksLikeBolt(b []byte) bool {
	return len(b) >= HeaderLen && ne.Uint64(b) == 0 && ne.Uint16(b[8:]) == metaPage &&
		ne.Uint32(b[pageHeaderLen:]) == magic
}

type meta struct {
	pageSize                uint64
	root, freelist, hwm, tx uint64
}

// parseMeta reads and verifies a meta page (header included) as bbolt's
// Meta.Validate does, plus the page header.
func parseMeta(b []byte, id uint64) (meta, error) {
	if len(b) < HeaderLen {
		return meta{}, fmt.Errorf("meta page %d cut short", id)
	}
	if ne.Uint64(b) != id || ne.Uint16(b[8:]) != metaPage {
		return meta{}, fmt.Errorf("page %d is not a meta page", id)
	}
	m := b[pageHeaderLen:HeaderLen]
	if ne.Uint32(m) != magic {
		return meta{}, fmt.Errorf("meta page %d: bad magic", id)
	}
	if v := ne.Uint32(m[4:]); v != formatVersion {
		return meta{}, fmt.Errorf("meta page %d: bbolt format version %d, want %d", id, v, formatVersion)
	}
	h := fnv.New64a()
	h.Write(m[:56])
	if h.Sum64() != ne.Uint64(m[56:]) {
		return meta{}, fmt.Errorf("meta page %d: checksum mismatch", id)
	}
	return meta{pageSize: uint64(ne.Uint32(m[8:])), root: ne.Uint64(m[16:]), freelist: ne.Uint64(m[32:]), hwm: ne.Uint64(m[40:]), tx: ne.Uint64(m[48:])}, nil
}
