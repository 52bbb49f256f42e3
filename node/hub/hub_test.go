package hub

import (
	"slices"
	"testing"
)

func TestWatcherMarksOnlyFollowedTimelines(t *testing.T) {
	h := New()
	a, b := h.Watch(), h.Watch()
	a.Add("x", "y")
	b.Add("y")
	for _, w := range []*Watcher{a, b} {
		<-w.Wake() // adding marks the timelines once
		w.Take()
	}

	h.Publish(map[string]uint64{"y": 3, "z": 1})
	<-a.Wake()
	<-b.Wake()
	if got := a.Take(); !slices.Equal(got, []string{"y"}) {
		t.Fatalf("a took %v", got)
	}
	if got := b.Take(); !slices.Equal(got, []string{"y"}) {
		t.Fatalf("b took %v", got)
	}

	a.Remove("y")
	h.Publish(map[string]uint64{"y": 4})
	if got := a.Take(); len(got) != 0 {
		t.Fatalf("a took %v after removing y", got)
	}
	h.PublishAll()
	if got := a.Take(); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("a took %v after a restore", got)
	}
	a.Close()
	b.Close()
	if len(h.byTimeline) != 0 {
		t.Fatalf("closed watchers left %v in the hub", h.byTimeline)
	}
}
