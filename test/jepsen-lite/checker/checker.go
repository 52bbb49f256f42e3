// Package checker judges a jepsen-lite history. Each checker returns a
// verdict with the problems it found (the first maxProblems of them).
package checker

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/syncstore/syncstore/test/jepsen-lite/history"
)

// maxProblems bounds the problems a verdict lists.
const maxProblems = 20

// Verdict of one checker.
type Verdict struct {
	Checker  string   `json:"checker"`
	Valid    bool     `json:"valid"`
	Problems []string `json:"problems,omitempty"`
	// Dropped counts problems past maxProblems.
	Dropped int `json:"dropped,omitempty"`
}

func (v *Verdict) problem(format string, args ...any) {
	v.Valid = false
	if len(v.Problems) < maxProblems {
		v.Problems = append(v.Problems, fmt.Sprintf(format, args...))
	} else {
		v.Dropped++
	}
}

// Summary is the run's last line: "jepsen-lite: VALID" or
// "jepsen-lite: INVALID (checker, checker)".
func Summary(vs []Verdict) string {
	var bad []string
	for _, v := range vs {
		if !v.Valid {
			bad = append(bad, v.Checker)
		}
	}
	if len(bad) == 0 {
		return "jepsen-lite: VALID"
	}
	return "jepsen-lite: INVALID (" + strings.Join(bad, ", ") + ")"
}

// Acknowledged: every acknowledged append is present on every replica that
// holds its timeline, once, at the seq it was acknowledged with, with its
// payload.
func Acknowledged(ops []history.Op, f history.Final) Verdict {
	v := Verdict{Checker: "acknowledged", Valid: true}
	for _, node := range slices.Sorted(maps.Keys(f.Timelines)) {
		tls := f.Timelines[node]
		for _, op := range ops {
			if !op.Kind.Writes() || op.Outcome != history.OK {
				continue
			}
			entries, ok := tls[op.Timeline]
			if !ok {
				continue // this node holds no replica of the timeline
			}
			if op.Seq == 0 || op.Seq > uint64(len(entries)) {
				v.problem("%s: %s key %s acknowledged at seq %d, but the timeline ends at %d (lost)", node, op.Timeline, op.Key, op.Seq, len(entries))
				continue
			}
			if e := entries[op.Seq-1]; e.Key != op.Key || e.Payload != op.Payload {
				v.problem("%s: %s seq %d holds key %s, acknowledged for key %s", node, op.Timeline, op.Seq, e.Key, op.Key)
			}
		}
	}
	return v
}

// Sequences: on every replica every timeline's seqs are exactly 1..head, and
// an append whose outcome is unknown appears at most once.
func Sequences(ops []history.Op, f history.Final) Verdict {
	v := Verdict{Checker: "sequences", Valid: true}
	unknown := map[string]bool{}
	for _, op := range ops {
		if op.Kind.Writes() && op.Outcome == history.Unknown {
			unknown[op.Timeline+"\x00"+op.Key] = true
		}
	}
	for _, node := range slices.Sorted(maps.Keys(f.Timelines)) {
		tls := f.Timelines[node]
		for _, tl := range slices.Sorted(maps.Keys(tls)) {
			seen := map[string]int{}
			for i, e := range tls[tl] {
				if e.Seq != uint64(i+1) {
					v.problem("%s: %s entry %d has seq %d: a gap or a duplicate seq", node, tl, i+1, e.Seq)
					break
				}
				seen[e.Key]++
			}
			for key, n := range seen {
				if n > 1 && unknown[tl+"\x00"+key] {
					v.problem("%s: %s: append with unknown outcome (key %s) appears %d times", node, tl, key, n)
				}
			}
		}
	}
	return v
}

// IdempotencyKeys: no idempotency key produced two entries. (Deliveries into
// member timelines carry no key; the fan-out checker judges them.)
func IdempotencyKeys(f history.Final) Verdict {
	v := Verdict{Checker: "idempotency", Valid: true}
	for _, node := range slices.Sorted(maps.Keys(f.Timelines)) {
		tls := f.Timelines[node]
		for _, tl := range slices.Sorted(maps.Keys(tls)) {
			at := map[string]uint64{}
			for _, e := range tls[tl] {
				if e.Key == "" {
					continue
				}
				if first, ok := at[e.Key]; ok {
					v.problem("%s: %s key %s at seq %d and again at seq %d", node, tl, e.Key, first, e.Seq)
					continue
				}
				at[e.Key] = e.Seq
			}
		}
	}
	return v
}

// Replicas: all replicas of every group have the same state digest, and
// every timeline reads the same on every replica that holds it.
func Replicas(f history.Final) Verdict {
	v := Verdict{Checker: "replicas", Valid: true}
	for _, g := range slices.Sorted(maps.Keys(f.Digests)) {
		byNode := f.Digests[g]
		nodes := slices.Sorted(maps.Keys(byNode))
		for _, n := range nodes[1:] {
			if byNode[n] != byNode[nodes[0]] {
				v.problem("group %d: %s's state differs from %s's", g, n, nodes[0])
			}
		}
	}
	ref, refNode := map[string][]history.Entry{}, map[string]string{}
	for _, node := range slices.Sorted(maps.Keys(f.Timelines)) {
		for tl, entries := range f.Timelines[node] {
			if r, ok := ref[tl]; !ok {
				ref[tl], refNode[tl] = entries, node
			} else if !slices.Equal(r, entries) {
				v.problem("%s: %s differs from %s's copy", node, tl, refNode[tl])
			}
		}
	}
	return v
}
