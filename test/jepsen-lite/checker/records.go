package checker

import (
	"encoding/hex"
	"maps"
	"slices"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/test/jepsen-lite/history"
)

// Collections: on every replica, each collection holds what its
// acknowledged writes left (a key an acknowledged write touched is at that
// write's version with its value, or at a later version); no version was
// given to two acknowledged writes; versions have no gap (every version
// up to the head went to an acknowledged write or to one whose outcome is
// unknown); the replicas of a collection are identical; and its digest is
// the hash of the records it holds.
func Collections(ops []history.Op, f history.Final) Verdict {
	v := Verdict{Checker: "collections", Valid: true}
	acked := map[string]map[uint64]history.Op{} // collection -> version -> write
	unknown := map[string]int{}
	deletes := deletesByKey(ops)
	for _, op := range ops {
		if op.Kind != history.RecordWrite {
			continue
		}
		switch op.Outcome {
		case history.Unknown:
			unknown[op.Timeline]++
		case history.OK:
			if acked[op.Timeline] == nil {
				acked[op.Timeline] = map[uint64]history.Op{}
			}
			if other, dup := acked[op.Timeline][op.Seq]; dup {
				v.problem("%s: version %d acknowledged to writes %s and %s", op.Timeline, op.Seq, other.Key, op.Key)
			}
			acked[op.Timeline][op.Seq] = op
		}
	}
	ref, refNode := map[string]history.Collection{}, map[string]string{}
	for _, node := range slices.Sorted(maps.Keys(f.Collections)) {
		for _, coll := range slices.Sorted(maps.Keys(f.Collections[node])) {
			c := f.Collections[node][coll]
			if r, ok := ref[coll]; !ok {
				ref[coll], refNode[coll] = c, node
			} else if r.Version != c.Version || r.Digest != c.Digest || !slices.Equal(r.Records, c.Records) {
				v.problem("%s: %s (version %d) differs from %s's copy (version %d)", node, coll, c.Version, refNode[coll], r.Version)
			}
			held := map[string]history.Record{}
			for _, r := range c.Records {
				held[r.Key] = r
			}
			if d := digestOf(held); d != c.Digest {
				v.problem("%s: %s reports digest %s, its records hash to %s", node, coll, c.Digest, d)
			}
			if n := len(acked[coll]); c.Version < uint64(n) || int(c.Version)-n > unknown[coll] {
				v.problem("%s: %s is at version %d with %d acknowledged and %d unknown writes: a gap or a lost version", node, coll, c.Version, n, unknown[coll])
			}
			for _, version := range slices.Sorted(maps.Keys(acked[coll])) {
				op := acked[coll][version]
				if version > c.Version {
					v.problem("%s: %s at version %d lost acknowledged write %s at %d", node, coll, c.Version, op.Key, version)
					continue
				}
				for k, val := range op.Puts {
					r, ok := held[k]
					switch {
					case ok && r.Version == version && r.Value != val:
						v.problem("%s: %s/%s at version %d holds %q, acknowledged as %q", node, coll, k, version, r.Value, val)
					case ok && r.Version < version:
						v.problem("%s: %s/%s at version %d: acknowledged write %s at %d is lost", node, coll, k, r.Version, op.Key, version)
					case !ok && !deletes.after(coll, k, version):
						v.problem("%s: %s/%s is missing: acknowledged write %s put it at %d and nothing deleted it", node, coll, k, op.Key, version)
					}
				}
				for _, k := range op.Deletes {
					if r, ok := held[k]; ok && r.Version <= version {
						v.problem("%s: %s/%s at version %d survives its acknowledged delete at %d", node, coll, k, r.Version, version)
					}
				}
			}
		}
	}
	return v
}

// keyDeletes says, per collection and key, which writes that may have
// taken effect delete it: the highest version of an acknowledged one, and
// whether one has an unknown outcome.
type keyDeletes struct {
	acked   map[[2]string]uint64
	unknown map[[2]string]bool
}

func deletesByKey(ops []history.Op) keyDeletes {
	d := keyDeletes{acked: map[[2]string]uint64{}, unknown: map[[2]string]bool{}}
	for _, op := range ops {
		if op.Kind != history.RecordWrite {
			continue
		}
		for _, k := range op.Deletes {
			key := [2]string{op.Timeline, k}
			switch op.Outcome {
			case history.Unknown:
				d.unknown[key] = true
			case history.OK:
				d.acked[key] = max(d.acked[key], op.Seq)
			}
		}
	}
	return d
}

// after: some write that may have taken effect after version deletes key.
func (d keyDeletes) after(coll, key string, version uint64) bool {
	k := [2]string{coll, key}
	return d.unknown[k] || d.acked[k] > version
}

// Devices replays every device's Sync and Get pages, collection by
// collection, in the order it read them: each Sync starts from the version
// the device reached; every page that reaches the head (OK, UP_TO_DATE)
// leaves the device holding exactly the server's records, so its digest
// is the one the page reports; no answer is AHEAD of what the server gave.
// And a device that ends at the final version holds the final records.
func Devices(ops []history.Op, f history.Final) Verdict {
	v := Verdict{Checker: "devices", Valid: true}
	type devColl struct {
		process int
		coll    string
	}
	type state struct {
		version uint64
		held    map[string]history.Record
	}
	devs := map[devColl]*state{}
	pages := 0
	for _, op := range ops {
		if (op.Kind != history.RecordSync && op.Kind != history.RecordGet) || op.Outcome != history.OK {
			continue
		}
		k := devColl{op.Process, op.Timeline}
		st := devs[k]
		if st == nil {
			st = &state{held: map[string]history.Record{}}
			devs[k] = st
		}
		pages++
		if op.Kind == history.RecordGet {
			if op.AfterKey == "" { // a full read begins: it replaces what the device held
				st.held, st.version = map[string]history.Record{}, op.Seq
			}
			for _, r := range op.Records {
				st.held[r.Key] = r
			}
			continue
		}
		if op.After != st.version {
			v.problem("process %d: %s synced from %d, but it was at %d", op.Process, op.Timeline, op.After, st.version)
			st.version = op.After
		}
		switch op.Status {
		case "RECORD_SYNC_STATUS_AHEAD":
			v.problem("process %d: %s: the server says %d is ahead of it", op.Process, op.Timeline, op.After)
		case "RECORD_SYNC_STATUS_RESET":
		default:
			for _, r := range op.Records {
				if r.Version <= op.After || r.Version > op.Seq {
					v.problem("process %d: %s page from %d to %d holds %s at version %d", op.Process, op.Timeline, op.After, op.Seq, r.Key, r.Version)
				}
				if r.Deleted {
					delete(st.held, r.Key)
				} else {
					st.held[r.Key] = r
				}
			}
			st.version = op.Seq
			if op.Status != "RECORD_SYNC_STATUS_MORE" {
				if d := digestOf(st.held); d != op.Digest {
					v.problem("process %d: %s synced to version %d holds records hashing to %s; the server's digest is %s", op.Process, op.Timeline, op.Seq, d, op.Digest)
				}
			}
		}
	}
	if pages == 0 {
		v.problem("no device read any page: the check was not exercised")
	}
	// Replicas that differ are the collections checker's to report; a
	// device is wrong here only if it matches no replica at its version
	// (it used to be compared with whichever replica map order gave first,
	// so the "replicas differ" case failed here now and then).
	for k, st := range devs {
		compared, matched := false, false
		for _, byNode := range f.Collections {
			c, ok := byNode[k.coll]
			if !ok || c.Version != st.version {
				continue
			}
			held := map[string]history.Record{}
			for _, r := range c.Records {
				held[r.Key] = r
			}
			compared = true
			matched = matched || digestOf(held) == digestOf(st.held)
		}
		if compared && !matched {
			v.problem("process %d: %s at the final version %d differs from the final records", k.process, k.coll, st.version)
		}
	}
	return v
}

func digestOf(held map[string]history.Record) string {
	d := make([]byte, 32)
	for k, r := range held {
		h := fsm.RecordHash(k, r.Version, []byte(r.Value))
		for i := range d {
			d[i] ^= h[i]
		}
	}
	return hex.EncodeToString(d)
}
