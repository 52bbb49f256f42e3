// Package moveinfo words a slot move the way operators read it, for every
// tool that names one (syncctl's move commands, a backup refusing a move).
package moveinfo

import (
	"fmt"
	"strings"

	"github.com/syncstore/syncstore/rpc/syncv1"
)

// Phase is the move's phase, marked "(aborting)" while an abort is asked
// for and not yet done.
func Phase(m *syncv1.MoveInfo) string {
	if m.GetAbortRequested() && m.GetPhase() != "aborted" {
		return m.GetPhase() + " (aborting)"
	}
	return m.GetPhase()
}

// Ranges is the slots of half-open ranges as inclusive "first-last" (or
// one slot alone), comma separated: the form syncctl slots move takes.
func Ranges(rs []*syncv1.SlotRange) string {
	var parts []string
	for _, r := range rs {
		if r.GetEnd() == r.GetStart()+1 {
			parts = append(parts, fmt.Sprint(r.GetStart()))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", r.GetStart(), r.GetEnd()-1))
		}
	}
	return strings.Join(parts, ",")
}
