package fsm

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/syncstore/syncstore/fsm/fsmpb"
	"github.com/syncstore/syncstore/internal/testutil"
)

func digestPointCmd() *fsmpb.Command {
	return &fsmpb.Command{IgnoreIfUnknown: true, Op: &fsmpb.Command_DigestPoint{DigestPoint: &fsmpb.DigestPoint{}}}
}

// The digest at a digest point is the state right after it, even when the
// batch that carried it went on applying.
func TestDigestPointHashesExactlyThePrefix(t *testing.T) {
	a, b := newHarness(t), newHarness(t)
	a.apply(appendCmd("t", "one", "", 1))
	want := a.digest() // the state with only "one"

	b.apply(appendCmd("t", "one", "", 1), digestPointCmd(), appendCmd("t", "two", "", 2))
	var got string
	testutil.Eventually(t, 10*time.Second, func() error {
		var ok bool
		if got, ok = b.f.DigestAt(2); !ok {
			return errors.New("no digest at index 2 yet")
		}
		return nil
	})
	if got != want {
		t.Fatalf("digest at the point %s, want the prefix's %s", got, want)
	}
	if len(b.pullAll("t")) != 2 {
		t.Fatal("the entry after the digest point was not applied")
	}
	if _, ok := b.f.DigestAt(3); ok {
		t.Fatal("a digest at an index that is no digest point")
	}
	// Only the last digestsKept points are kept.
	for i := range digestsKept + 2 {
		b.apply(appendCmd("t", fmt.Sprint(i), "", 3), digestPointCmd())
	}
	last := b.next - 1
	testutil.Eventually(t, 10*time.Second, func() error {
		if _, ok := b.f.DigestAt(last); !ok {
			return errors.New("no digest at the last point yet")
		}
		return nil
	})
	if _, ok := b.f.DigestAt(2); ok {
		t.Fatal("the oldest digest point is still kept")
	}
}
