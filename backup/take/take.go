// Package take takes a backup of a whole cluster into one file: the meta
// group, then every data group of the shard map, each streamed from its
// leader and cut at its own applied index (format: package backup). It is
// what syncctl backup runs, and what tests and tools call to take a real
// backup. See DESIGN.md.
package take

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/backup"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// ErrMapMoved: the shard map or the moves changed while the parts were
// streamed, so the parts may not fit one map. Run retries once.
var ErrMapMoved = errors.New("the shard map moved under the backup")

// Options says where a backup goes and who follows it.
type Options struct {
	Out string // the backup file
	// Force replaces Out if it exists; without it an existing Out (found at
	// the start or appearing meanwhile) fails the backup.
	Force    bool
	Progress Progress         // nil: nobody follows
	Now      func() time.Time // time.Now unless a test sets it
	// MaxBytesPerSecond paces the streaming (pace.go); 0 streams as fast
	// as the cluster sends.
	MaxBytesPerSecond int64
	sleep             func(context.Context, time.Duration) error // a test's clock; nil: a timer
}

// Result is what a backup took: with syncctl's --json, the manifest's
// fields and these.
type Result struct {
	backup.Manifest
	File     string  `json:"file"`
	Bytes    int64   `json:"bytes"`
	Seconds  float64 `json:"duration_seconds"`
	MBps     float64 `json:"mb_per_s"`
	Attempts int     `json:"attempts"`
	Retried  string  `json:"retried_because,omitempty"`
}

// Run writes the backup of src to opts.Out: a second attempt only when
// the first found the map moved under it (ErrMapMoved). A move in flight
// fails it as FailedPrecondition. Out is either absent or a whole backup.
func Run(ctx context.Context, src Source, opts Options) (Result, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Progress == nil {
		opts.Progress = NoProgress{}
	}
	if _, err := os.Lstat(opts.Out); err == nil && !opts.Force {
		return Result{}, fmt.Errorf("backup: %s exists (give --force to replace it)", opts.Out)
	}
	start := opts.Now()
	var retried string
	for attempt := 1; ; attempt++ {
		m, n, err := once(ctx, src, opts)
		if errors.Is(err, ErrMapMoved) && attempt == 1 {
			retried = err.Error()
			continue
		}
		if err != nil {
			return Result{}, err
		}
		secs := opts.Now().Sub(start).Seconds()
		res := Result{Manifest: m, File: opts.Out, Bytes: n, Seconds: secs, Attempts: attempt, Retried: retried}
		if secs > 0 {
			res.MBps = float64(n) / 1e6 / secs
		}
		return res, nil
	}
}

// once writes one attempt to a temporary file next to Out and, if every
// part streamed and the map held still, puts it at Out.
func once(ctx context.Context, src Source, opts Options) (backup.Manifest, int64, error) {
	smap, before, err := viewMap(ctx, src)
	if err != nil {
		return backup.Manifest{}, 0, err
	}
	clusterID, err := src.ClusterID(ctx)
	if err != nil {
		return backup.Manifest{}, 0, fmt.Errorf("backup: read the cluster id: %w", err)
	}
	groups := slices.Clone(smap.GetGroups())
	slices.SortFunc(groups, func(a, b *syncv1.ShardGroupInfo) int { return cmp.Compare(a.GetId(), b.GetId()) })

	f, err := os.CreateTemp(filepath.Dir(opts.Out), "."+filepath.Base(opts.Out)+".tmp-*")
	if err != nil {
		return backup.Manifest{}, 0, fmt.Errorf("backup: %w", err)
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	w, err := backup.NewWriter(f, backup.Header{ClusterID: clusterID, Created: opts.Now().UTC(), ShardMapVersion: smap.GetVersion()})
	if err != nil {
		return backup.Manifest{}, 0, fmt.Errorf("backup: %w", err)
	}
	pace := newPacer(opts)
	opts.Progress.Start(1 + len(groups))
	defer opts.Progress.Finish()
	if err := takePart(ctx, src, w, backup.MetaPartName, backup.PartMeta{Kind: backup.KindMeta, GroupID: uint64(shard.MetaGroup)}, clusterID, pace, opts.Progress); err != nil {
		return backup.Manifest{}, 0, err
	}
	for _, grp := range groups {
		var rs []shard.Range
		for _, r := range grp.GetRanges() {
			rs = append(rs, shard.Range{Start: r.GetStart(), End: r.GetEnd()})
		}
		meta := backup.PartMeta{Kind: backup.KindGroup, GroupID: grp.GetId(), Ranges: backup.RangesOf(rs)}
		if err := takePart(ctx, src, w, backup.GroupPartName(grp.GetId()), meta, clusterID, pace, opts.Progress); err != nil {
			return backup.Manifest{}, 0, err
		}
	}
	_, after, err := viewMap(ctx, src)
	if err != nil {
		if status.Code(err) == codes.FailedPrecondition {
			return backup.Manifest{}, 0, fmt.Errorf("backup: %w: %v", ErrMapMoved, status.Convert(err).Message())
		}
		return backup.Manifest{}, 0, err
	}
	if after.version != before.version || !slices.Equal(after.moves, before.moves) {
		return backup.Manifest{}, 0, fmt.Errorf("backup: %w: %v at the start, %v at the end", ErrMapMoved, before, after)
	}
	if err := w.Close(); err != nil {
		return backup.Manifest{}, 0, fmt.Errorf("backup: %w", err)
	}
	if err := f.Sync(); err != nil {
		return backup.Manifest{}, 0, fmt.Errorf("backup: sync %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return backup.Manifest{}, 0, fmt.Errorf("backup: %w", err)
	}
	done = true
	if err := place(f.Name(), opts.Out, opts.Force); err != nil {
		os.Remove(f.Name())
		return backup.Manifest{}, 0, err
	}
	return w.Manifest(), w.Bytes(), nil
}

// place renames the finished temporary file to out: without force by a
// hard link, which refuses an out that appeared meanwhile. Then it syncs
// the directory so the name lasts.
func place(tmp, out string, force bool) error {
	if force {
		if err := os.Rename(tmp, out); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
	} else {
		if err := os.Link(tmp, out); err != nil {
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("backup: %s exists (give --force to replace it)", out)
			}
			return fmt.Errorf("backup: %w", err)
		}
		os.Remove(tmp)
	}
	d, err := os.Open(filepath.Dir(out))
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("backup: sync the directory of %s: %w", out, err)
	}
	return nil
}
