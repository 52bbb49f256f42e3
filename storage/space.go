package storage

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrNoSpace is returned by CheckSpace while the free space of the
// engine's filesystem is below the reserve: writes are refused before the
// disk runs out, so a node short of space keeps serving reads instead of
// failing in the middle of a commit.
var ErrNoSpace = errors.New("storage: free disk space is below the reserve")

// spaceCheckInterval is how often the engine reads its filesystem's free
// space in the background; spaceRecheck is how old a reading CheckSpace
// accepts (writes can eat the reserve fast).
const (
	spaceCheckInterval = 250 * time.Millisecond
	spaceRecheck       = 10 * time.Millisecond
)

// Space is what the engine knows of its disk.
type Space struct {
	FreeBytes    uint64
	ReserveBytes uint64
	// Low: FreeBytes < ReserveBytes, writes are refused.
	Low bool
	// Stalled says why a state commit is waiting for space ("" when none
	// is): a replica's apply waits, it does not fail.
	Stalled string
}

type spaceWatch struct {
	checked atomic.Int64 // when free was read, Unix ns
	free    atomic.Uint64
	low     atomic.Bool
	stalled atomic.Pointer[string]
	stop    chan struct{}
	done    chan struct{}
}

func (e *Engine) startSpaceWatch() {
	e.space.stop, e.space.done = make(chan struct{}), make(chan struct{})
	e.checkSpaceNow()
	go func() {
		defer close(e.space.done)
		t := time.NewTicker(spaceCheckInterval)
		defer t.Stop()
		for {
			select {
			case <-e.space.stop:
				return
			case <-t.C:
				e.checkSpaceNow()
			}
		}
	}()
}

func (e *Engine) stopSpaceWatch() {
	if e.space.stop != nil {
		close(e.space.stop)
		<-e.space.done
	}
}

// checkSpaceNow reads the free space and logs when it crosses the reserve.
func (e *Engine) checkSpaceNow() {
	var st syscall.Statfs_t
	if err := syscall.Statfs(e.opts.Dir, &st); err != nil {
		e.opts.Logger.Error("storage: cannot read the free disk space", "dir", e.opts.Dir, "err", err)
		return
	}
	free := st.Bavail * uint64(st.Bsize)
	e.space.free.Store(free)
	e.space.checked.Store(time.Now().UnixNano())
	low := free < e.opts.ReserveBytes
	if was := e.space.low.Swap(low); was != low {
		if low {
			e.opts.Logger.Error("storage: free disk space is below the reserve: writes are refused until space is freed; reads go on",
				"dir", e.opts.Dir, "free_bytes", free, "reserve_bytes", e.opts.ReserveBytes)
		} else {
			e.opts.Logger.Info("storage: free disk space is back above the reserve: writes resume", "free_bytes", free, "reserve_bytes", e.opts.ReserveBytes)
		}
	}
}

// CheckSpace returns an error wrapping ErrNoSpace while the free space is
// below the reserve.
func (e *Engine) CheckSpace() error {
	if e.opts.ReserveBytes == 0 {
		return nil
	}
	if time.Since(time.Unix(0, e.space.checked.Load())) > spaceRecheck {
		e.checkSpaceNow()
	}
	if e.space.low.Load() {
		return fmt.Errorf("%w: %d MiB free on the data dir's disk, reserve %d MiB; free space to resume writes (reads go on)",
			ErrNoSpace, e.space.free.Load()>>20, e.opts.ReserveBytes>>20)
	}
	return nil
}

// Space reports the engine's view of its disk.
func (e *Engine) Space() Space {
	s := Space{FreeBytes: e.space.free.Load(), ReserveBytes: e.opts.ReserveBytes, Low: e.space.low.Load()}
	if p := e.space.stalled.Load(); p != nil {
		s.Stalled = *p
	}
	return s
}

// onStall records a state commit waiting for space (err nil: it went
// through).
func (e *Engine) onStall(err error) {
	if err == nil {
		if e.space.stalled.Swap(nil) != nil {
			e.opts.Logger.Info("storage: the state commit waiting for space went through")
		}
		return
	}
	msg := err.Error()
	if e.space.stalled.Swap(&msg) == nil {
		e.opts.Logger.Error("storage: a state commit failed for want of space; retrying until space is freed (applies wait, nothing is lost: the log holds them)", "err", err)
		e.checkSpaceNow()
	}
}
