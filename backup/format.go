// Package backup is the file format of a cluster backup: one part per Raft
// group (each part a group's snapshot stream, opaque here) and a manifest
// describing them, written and read in bounded memory. See DESIGN.md.
//
// Layout (integers big-endian):
//
//	header    "SSBACKUP", format version (uint16)
//	parts     for each part, one after another:
//	          'P' name length (uint16) name                  CRC-32C
//	          'D' data length (uint32, 1 .. 1 MiB) data       CRC-32C   (repeated)
//	          'E' part length (uint64) SHA-256 of the data    CRC-32C
//	manifest  JSON (Manifest)
//	trailer   manifest length (uint64), SHA-256 of the manifest, "SSBAKEND"
//
// Each CRC-32C covers its record from the type byte on.
package backup

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/syncstore/syncstore/shard"
)

// FormatVersion is the version this package writes and the only one it reads.
const FormatVersion = 1

// Errors. Damage found in a part is a *PartError naming the part and
// wrapping one of these; damage elsewhere wraps one of them with "manifest",
// "header" or an offset for context.
var (
	// ErrTruncated: the file does not end with a complete trailer (a copy
	// cut short, a backup that never finished).
	ErrTruncated = errors.New("truncated")
	// ErrChecksum: a CRC-32C, SHA-256 or length does not match.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrCorrupt: the framing or the manifest does not parse.
	ErrCorrupt = errors.New("damaged")
	// ErrMissingPart: the manifest lists a part the file does not hold.
	ErrMissingPart = errors.New("missing")
	// ErrUnknownPart: the file holds a part the manifest does not list.
	ErrUnknownPart = errors.New("not listed in the manifest")
	// ErrDuplicatePart: a part name given (or found) twice.
	ErrDuplicatePart = errors.New("duplicate part")
	// ErrUnknownFormat: not a backup file, or one of another format version.
	ErrUnknownFormat = errors.New("unknown format")
)

// PartError is an error about one part.
type PartError struct {
	Part string
	Err  error
}

func (e *PartError) Error() string { return fmt.Sprintf("backup: part %q: %v", e.Part, e.Err) }
func (e *PartError) Unwrap() error { return e.Err }

func partErr(name string, err error, format string, args ...any) error {
	if format != "" {
		err = fmt.Errorf("%w: "+format, append([]any{err}, args...)...)
	}
	return &PartError{Part: name, Err: err}
}

const (
	fileMagic = "SSBACKUP"
	endMagic  = "SSBAKEND"
	// headerLen: the magic, the version. Untyped (not len(...), which is
	// an int) so it mixes with int64 offsets.
	headerLen = 8 + 2
	// trailerLen: manifest length, manifest SHA-256, end magic.
	trailerLen = 8 + 32 + 8

	recBegin = 'P'
	recData  = 'D'
	recEnd   = 'E'

	// MaxFrame bounds one data frame, and so what a writer or a reader
	// holds of a part at a time.
	MaxFrame = 1 << 20
	// maxName bounds a part name (it is framed with a uint16 length).
	maxName = 255
	// maxManifest bounds what Open allocates for the manifest: far above
	// what thousands of groups need, far below what a damaged length
	// could claim.
	maxManifest = 64 << 20

	dataHeaderLen = 1 + 4
	endRecLen     = 1 + 8 + 32 + 4
	crcLen        = 4
)

// Kind is what a part holds.
type Kind string

const (
	KindMeta  Kind = "meta"  // the meta group (id 0): nodes, shard map
	KindGroup Kind = "group" // a data group
)

// MetaPartName and GroupPartName are the part names syncctl uses, so a
// backup and a restore agree on them.
const MetaPartName = "meta"

func GroupPartName(id uint64) string { return "group-" + strconv.FormatUint(id, 10) }

// SlotRange is the slots First..Last, both included.
type SlotRange struct {
	First uint32 `json:"first"`
	Last  uint32 `json:"last"`
}

// RangesOf converts the shard map's half-open ranges.
func RangesOf(rs []shard.Range) []SlotRange {
	out := make([]SlotRange, 0, len(rs))
	for _, r := range rs {
		if r.End > r.Start {
			out = append(out, SlotRange{First: r.Start, Last: r.End - 1})
		}
	}
	return out
}

// Shard is r as the shard map's half-open range.
func (r SlotRange) Shard() shard.Range { return shard.Range{Start: r.First, End: r.Last + 1} }

// Header is what the caller knows before the first part.
type Header struct {
	ClusterID string
	// Created is when the backup started (the package reads no clock).
	Created         time.Time
	ShardMapVersion uint64
}

// PartMeta is what is known of a part before its bytes are streamed.
type PartMeta struct {
	Kind         Kind   `json:"kind"`
	GroupID      uint64 `json:"group_id"`
	AppliedIndex uint64 `json:"applied_index"`
	// Digest is the state digest the server reported at AppliedIndex.
	Digest string      `json:"digest"`
	Ranges []SlotRange `json:"ranges,omitempty"`
}

// PartInfo is a part as the manifest lists it.
type PartInfo struct {
	Name string `json:"name"`
	PartMeta
	Length int64  `json:"length"`
	SHA256 string `json:"sha256"` // hex
	// Offset is where the part's begin record is in the file.
	Offset int64 `json:"offset"`
}

// Manifest describes a backup.
type Manifest struct {
	FormatVersion   int        `json:"format_version"`
	ClusterID       string     `json:"cluster_id"`
	Created         time.Time  `json:"created"`
	ShardMapVersion uint64     `json:"shard_map_version"`
	Parts           []PartInfo `json:"parts"`
}

// Part returns the part named name.
func (m Manifest) Part(name string) (PartInfo, bool) {
	for _, p := range m.Parts {
		if p.Name == name {
			return p, true
		}
	}
	return PartInfo{}, false
}

func checkName(name string) error {
	if name == "" || len(name) > maxName || !utf8.ValidString(name) {
		return fmt.Errorf("backup: part name %q: want 1..%d bytes of UTF-8", name, maxName)
	}
	return nil
}

func checkMeta(m PartMeta) error {
	switch {
	case m.Kind == KindMeta && m.GroupID != uint64(shard.MetaGroup):
		return fmt.Errorf("kind meta with group id %d, want %d", m.GroupID, shard.MetaGroup)
	case m.Kind == KindGroup && m.GroupID == uint64(shard.MetaGroup):
		return fmt.Errorf("kind group with the meta group's id %d", m.GroupID)
	case m.Kind != KindMeta && m.Kind != KindGroup:
		return fmt.Errorf("kind %q, want %q or %q", m.Kind, KindMeta, KindGroup)
	}
	for _, r := range m.Ranges {
		if r.First > r.Last || r.Last >= shard.SlotCount {
			return fmt.Errorf("slot range %d..%d outside 0..%d", r.First, r.Last, shard.SlotCount-1)
		}
	}
	return nil
}

// check validates a manifest read from a file whose data region is
// [headerLen, dataEnd): every later check (offsets, lengths) relies on it.
func (m Manifest) check(dataEnd int64) error {
	if m.FormatVersion != FormatVersion {
		return fmt.Errorf("backup: manifest: %w: format version %d, this binary reads %d", ErrUnknownFormat, m.FormatVersion, FormatVersion)
	}
	names := make(map[string]bool, len(m.Parts))
	groups := make(map[uint64]string, len(m.Parts))
	prev := int64(headerLen)
	for _, p := range m.Parts {
		if err := checkName(p.Name); err != nil {
			return fmt.Errorf("backup: manifest: %w: %w", ErrCorrupt, err)
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("backup: manifest: %w", partErr(p.Name, ErrCorrupt, format, args...))
		}
		if names[p.Name] {
			return bad("listed twice")
		}
		names[p.Name] = true
		if err := checkMeta(p.PartMeta); err != nil {
			return bad("%v", err)
		}
		if other, ok := groups[p.GroupID]; ok {
			return bad("group %d already in part %q", p.GroupID, other)
		}
		groups[p.GroupID] = p.Name
		if sum, err := hex.DecodeString(p.SHA256); err != nil || len(sum) != 32 {
			return bad("sha256 %q", p.SHA256)
		}
		// Parts are listed in file order; an offset may repeat only where
		// a listed part is absent (Verify then reports it missing).
		if p.Offset < prev || p.Offset > dataEnd || p.Length < 0 || p.Length > dataEnd-p.Offset {
			return bad("offset %d, length %d outside the data", p.Offset, p.Length)
		}
		prev = p.Offset
	}
	return nil
}
