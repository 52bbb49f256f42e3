package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/backup"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// errMapMoved: the shard map or the moves changed while the parts were
// streamed, so the parts may not fit one map. A backup retries once.
var errMapMoved = errors.New("the shard map moved under the backup")

func newBackupCmd(g *globals) *cobra.Command {
	var out string
	var force bool
	var startTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "backup --out FILE",
		Short: "Write a backup of the whole cluster (meta group and every data group) to FILE; 'backup verify FILE' checks one",
		Long: `Stream the meta group and then every data group of the shard map, each
from its leader after a read barrier and cut at one applied index, into
one file (format: backup/DESIGN.md). The file is written next to FILE
under a temporary name, synced and renamed, so FILE is either absent or
a whole backup.

A backup refuses to start while a slot move is in flight (wait for it or
abort it). If the shard map's version or the set of moves changes while
the parts stream, the parts may not fit one map: the backup starts over
once, and fails if it happens again.

--timeout bounds each request; --start-timeout the wait for each group's
stream to start (its leader hashes the group's state first, a pass over
it); nothing bounds the streaming of a group's data.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usageError{errors.New("--out FILE is required")}
			}
			cl, err := g.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			opts := backupOptions{out: out, force: force, progress: g.backupProgress(cmd.ErrOrStderr())}
			res, err := runBackup(ctx, clusterSource{cl: cl, timeout: g.timeout, startTimeout: startTimeout}, opts)
			if err != nil {
				return err
			}
			return g.print(res, func(w io.Writer) {
				printManifest(w, res.Manifest, res.File)
				fmt.Fprintf(w, "%d parts, %s in %.2f s (%.1f MB/s)", len(res.Parts), humanBytes(res.Bytes), res.Seconds, res.MBps)
				if res.Attempts > 1 {
					fmt.Fprintf(w, " (started over once: %s)", res.Retried)
				}
				fmt.Fprintln(w)
			})
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "the backup file to write (required)")
	cmd.Flags().BoolVar(&force, "force", false, "replace --out if it exists")
	cmd.Flags().DurationVar(&startTimeout, "start-timeout", 5*time.Minute, "how long to wait for a group's stream to start (finding its leader, which hashes the group first)")
	cmd.AddCommand(newBackupVerifyCmd(g))
	return cmd
}

// backupSource is what a backup reads from the cluster (a fake in tests).
type backupSource interface {
	ShardMap(ctx context.Context) (*syncv1.ShardMapResponse, error)
	Moves(ctx context.Context) ([]*syncv1.MoveInfo, error)
	ClusterID(ctx context.Context) (string, error)
	// Group streams a group's backup: a header chunk, then data chunks.
	Group(ctx context.Context, id uint64, fn func(*syncv1.BackupChunk) error) error
}

// clusterSource reads a cluster through the client, each unary request
// under timeout.
type clusterSource struct {
	cl           *client.Client
	timeout      time.Duration
	startTimeout time.Duration // for a group's first chunk
}

func (s clusterSource) admin(ctx context.Context, fn func(context.Context, syncv1.AdminClient) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.cl.Admin(ctx, fn)
}

func (s clusterSource) ShardMap(ctx context.Context) (m *syncv1.ShardMapResponse, err error) {
	err = s.admin(ctx, func(ctx context.Context, a syncv1.AdminClient) error {
		m, err = a.ShardMap(ctx, &syncv1.ShardMapRequest{})
		return err
	})
	return m, err
}

func (s clusterSource) Moves(ctx context.Context) (moves []*syncv1.MoveInfo, err error) {
	err = s.admin(ctx, func(ctx context.Context, a syncv1.AdminClient) error {
		resp, err := a.ListMoves(ctx, &syncv1.ListMovesRequest{})
		moves = resp.GetMoves()
		return err
	})
	return moves, err
}

func (s clusterSource) ClusterID(ctx context.Context) (id string, err error) {
	err = s.admin(ctx, func(ctx context.Context, a syncv1.AdminClient) error {
		st, err := a.NodeStatus(ctx, &syncv1.NodeStatusRequest{})
		id = st.GetClusterId()
		return err
	})
	return id, err
}

// Group gives the stream startTimeout to deliver its first chunk (routing
// and retries to the leader included, and the leader's digest pass), then
// as long as the data takes.
func (s clusterSource) Group(ctx context.Context, id uint64, fn func(*syncv1.BackupChunk) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	slow := time.AfterFunc(s.startTimeout, func() {
		cancel(fmt.Errorf("group %d: its stream did not start within --start-timeout %v", id, s.startTimeout))
	})
	defer slow.Stop()
	err := s.cl.BackupGroup(ctx, id, func(c *syncv1.BackupChunk) error {
		slow.Stop()
		return fn(c)
	})
	if cause := context.Cause(ctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		return fmt.Errorf("%w (%v)", cause, err)
	}
	return err
}

type backupOptions struct {
	out      string
	force    bool
	progress backupProgress
	now      func() time.Time // time.Now unless a test sets it
}

// backupResult is what a backup prints: with --json, the manifest's fields
// and these.
type backupResult struct {
	backup.Manifest
	File     string  `json:"file"`
	Bytes    int64   `json:"bytes"`
	Seconds  float64 `json:"duration_seconds"`
	MBps     float64 `json:"mb_per_s"`
	Attempts int     `json:"attempts"`
	Retried  string  `json:"retried_because,omitempty"`
}

// runBackup writes the backup: a second attempt only when the first found
// the map moved under it.
func runBackup(ctx context.Context, src backupSource, opts backupOptions) (backupResult, error) {
	if opts.now == nil {
		opts.now = time.Now
	}
	if opts.progress == nil {
		opts.progress = noProgress{}
	}
	if _, err := os.Lstat(opts.out); err == nil && !opts.force {
		return backupResult{}, fmt.Errorf("backup: %s exists (give --force to replace it)", opts.out)
	}
	start := opts.now()
	var retried string
	for attempt := 1; ; attempt++ {
		m, n, err := backupOnce(ctx, src, opts)
		if errors.Is(err, errMapMoved) && attempt == 1 {
			retried = err.Error()
			continue
		}
		if err != nil {
			return backupResult{}, err
		}
		secs := opts.now().Sub(start).Seconds()
		res := backupResult{Manifest: m, File: opts.out, Bytes: n, Seconds: secs, Attempts: attempt, Retried: retried}
		if secs > 0 {
			res.MBps = float64(n) / 1e6 / secs
		}
		return res, nil
	}
}

// mapView is what a backup checks did not change while it streamed.
type mapView struct {
	version uint64
	moves   []uint64 // every move's id, in the order listed
}

func (v mapView) String() string { return fmt.Sprintf("shard map v%d, moves %v", v.version, v.moves) }

// viewMap reads the shard map and the moves, refusing a move in flight:
// its copy may be in the target's part and not in the map, or the reverse.
func viewMap(ctx context.Context, src backupSource) (*syncv1.ShardMapResponse, mapView, error) {
	smap, err := src.ShardMap(ctx)
	if err != nil {
		return nil, mapView{}, fmt.Errorf("backup: read the shard map: %w", err)
	}
	if smap.GetVersion() == 0 {
		return nil, mapView{}, status.Error(codes.FailedPrecondition, "backup: the cluster has no shard map yet")
	}
	moves, err := src.Moves(ctx)
	if err != nil {
		return nil, mapView{}, fmt.Errorf("backup: list the moves: %w", err)
	}
	v := mapView{version: smap.GetVersion()}
	var busy []string
	var ids []uint64
	for _, m := range moves {
		v.moves = append(v.moves, m.GetId())
		if p := m.GetPhase(); p != "cleaned" && p != "aborted" {
			busy = append(busy, fmt.Sprintf("move %d (slots %s, group %d -> %d) is %s", m.GetId(), rangesString(m.GetRanges()), m.GetSourceGroup(), m.GetTargetGroup(), phaseOf(m)))
			ids = append(ids, m.GetId())
		}
	}
	if len(busy) > 0 {
		return nil, mapView{}, status.Errorf(codes.FailedPrecondition,
			"backup: %s: a backup needs the slots to stay put; wait for it to finish (syncctl move watch %s) or abort it (syncctl move abort ID)",
			strings.Join(busy, "; "), joinIDs(ids))
	}
	return smap, v, nil
}

func joinIDs(ids []uint64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return strings.Join(s, " ")
}

// backupOnce writes one attempt to a temporary file next to out and, if
// every part streamed and the map held still, renames it to out.
func backupOnce(ctx context.Context, src backupSource, opts backupOptions) (backup.Manifest, int64, error) {
	smap, before, err := viewMap(ctx, src)
	if err != nil {
		return backup.Manifest{}, 0, err
	}
	clusterID, err := src.ClusterID(ctx)
	if err != nil {
		return backup.Manifest{}, 0, fmt.Errorf("backup: read the cluster id: %w", err)
	}
	groups := slices.Clone(smap.GetGroups())
	slices.SortFunc(groups, func(a, b *syncv1.ShardGroupInfo) int { return compareU64(a.GetId(), b.GetId()) })

	f, err := os.CreateTemp(filepath.Dir(opts.out), "."+filepath.Base(opts.out)+".tmp-*")
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
	w, err := backup.NewWriter(f, backup.Header{ClusterID: clusterID, Created: opts.now().UTC(), ShardMapVersion: smap.GetVersion()})
	if err != nil {
		return backup.Manifest{}, 0, fmt.Errorf("backup: %w", err)
	}
	opts.progress.start(1 + len(groups))
	defer opts.progress.finish()
	if err := backupPart(ctx, src, w, backup.MetaPartName, backup.PartMeta{Kind: backup.KindMeta, GroupID: uint64(shard.MetaGroup)}, clusterID, opts.progress); err != nil {
		return backup.Manifest{}, 0, err
	}
	for _, grp := range groups {
		var rs []shard.Range
		for _, r := range grp.GetRanges() {
			rs = append(rs, shard.Range{Start: r.GetStart(), End: r.GetEnd()})
		}
		meta := backup.PartMeta{Kind: backup.KindGroup, GroupID: grp.GetId(), Ranges: backup.RangesOf(rs)}
		if err := backupPart(ctx, src, w, backup.GroupPartName(grp.GetId()), meta, clusterID, opts.progress); err != nil {
			return backup.Manifest{}, 0, err
		}
	}
	_, after, err := viewMap(ctx, src)
	if err != nil {
		if status.Code(err) == codes.FailedPrecondition {
			return backup.Manifest{}, 0, fmt.Errorf("backup: %w: %v", errMapMoved, status.Convert(err).Message())
		}
		return backup.Manifest{}, 0, err
	}
	if after.version != before.version || !slices.Equal(after.moves, before.moves) {
		return backup.Manifest{}, 0, fmt.Errorf("backup: %w: %v at the start, %v at the end", errMapMoved, before, after)
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
	if err := place(f.Name(), opts.out, opts.force); err != nil {
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

// backupPart streams one group into a part: the header chunk's applied
// index and digest go into the part's meta, each data chunk straight into
// the writer (which holds at most one frame), so memory stays bounded
// whatever the group's size.
func backupPart(ctx context.Context, src backupSource, w *backup.Writer, name string, meta backup.PartMeta, clusterID string, p backupProgress) error {
	p.group(name)
	var pw io.WriteCloser
	err := src.Group(ctx, meta.GroupID, func(c *syncv1.BackupChunk) error {
		if pw == nil {
			switch {
			case c.GetGroupId() != meta.GroupID:
				return fmt.Errorf("the stream is of group %d", c.GetGroupId())
			case c.GetClusterId() != "" && c.GetClusterId() != clusterID:
				return fmt.Errorf("the stream is of cluster %q, the cluster is %q", c.GetClusterId(), clusterID)
			}
			meta.AppliedIndex, meta.Digest = c.GetAppliedIndex(), c.GetDigest()
			var err error
			if pw, err = w.Part(name, meta); err != nil {
				return err
			}
		} else if c.GetAppliedIndex() != 0 || c.GetDigest() != "" {
			return errors.New("a second header in the stream")
		}
		if len(c.GetData()) == 0 {
			return nil
		}
		if _, err := pw.Write(c.GetData()); err != nil {
			return err
		}
		p.bytes(w.Bytes())
		return nil
	})
	if err == nil && pw == nil {
		err = errors.New("the stream ended before its header")
	}
	if err == nil {
		err = pw.Close()
	}
	if err != nil {
		return fmt.Errorf("backup: group %d (part %q): %w", meta.GroupID, name, err)
	}
	p.bytes(w.Bytes())
	p.partDone()
	return nil
}

func compareU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// backupProgress follows a backup: parts done of total, and bytes written.
type backupProgress interface {
	start(parts int)
	group(name string)
	bytes(n int64)
	partDone()
	finish()
}

type noProgress struct{}

func (noProgress) start(int)    {}
func (noProgress) group(string) {}
func (noProgress) bytes(int64)  {}
func (noProgress) partDone()    {}
func (noProgress) finish()      {}

// backupProgress is a bar on stderr when it is a terminal and the output
// is not JSON; else nothing (the summary says it all at the end).
func (g *globals) backupProgress(stderr io.Writer) backupProgress {
	fi, err := os.Stderr.Stat()
	if g.json || stderr != os.Stderr || err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return noProgress{}
	}
	return &barProgress{w: stderr, throttle: 100 * time.Millisecond}
}

type barProgress struct {
	w           io.Writer
	throttle    time.Duration // between redraws
	bar         *progressbar.ProgressBar
	done, total int
	name        string
}

func (b *barProgress) start(parts int) {
	b.total, b.done = parts, 0
	if b.bar != nil { // a second attempt
		b.bar.Finish()
	}
	b.bar = progressbar.NewOptions64(-1, progressbar.OptionSetWriter(b.w), progressbar.OptionShowBytes(true),
		progressbar.OptionSpinnerType(14), progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(b.throttle))
}

func (b *barProgress) describe() {
	b.bar.Describe(fmt.Sprintf("backup: %d/%d parts done, %s", b.done, b.total, b.name))
}

func (b *barProgress) group(name string) { b.name = name; b.describe() }
func (b *barProgress) bytes(n int64)     { _ = b.bar.Set64(n) }
func (b *barProgress) partDone()         { b.done++; b.describe() }
func (b *barProgress) finish()           { _ = b.bar.Finish() }

func newBackupVerifyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "verify FILE",
		Short: "Check every checksum of a backup file and print what it holds",
		Long: `Read the backup through: header, every part's frames, checksums and
lengths, the manifest and the trailer. It prints the manifest (cluster id,
creation time, shard map version, each part's group, applied index, bytes
and slots) and OK, or fails (exit 1) naming the damaged part and what is
wrong with it: truncated, checksum mismatch, missing, ...`,
		Args: exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			res, err := verifyBackup(args[0])
			if perr := g.print(res, func(w io.Writer) {
				if res.Manifest != nil {
					printManifest(w, *res.Manifest, res.File)
				}
				if res.OK {
					fmt.Fprintln(w, "OK")
				}
			}); perr != nil {
				return perr
			}
			return err
		},
	}
}

// verifyResult is what backup verify prints.
type verifyResult struct {
	File     string           `json:"file"`
	OK       bool             `json:"ok"`
	Manifest *backup.Manifest `json:"manifest,omitempty"`
	// DamagedPart names the part the damage is in ("" when it is in the
	// header, manifest or trailer); Problem is what is wrong.
	DamagedPart string `json:"damaged_part,omitempty"`
	Problem     string `json:"problem,omitempty"`
	Error       string `json:"error,omitempty"`
}

func verifyBackup(path string) (verifyResult, error) {
	res := verifyResult{File: path}
	m, err := backup.Verify(path)
	if m.FormatVersion != 0 {
		res.Manifest = &m
	}
	if err == nil {
		res.OK = true
		return res, nil
	}
	res.Error, res.Problem = err.Error(), problemOf(err)
	var pe *backup.PartError
	if errors.As(err, &pe) {
		res.DamagedPart = pe.Part
		return res, fmt.Errorf("backup %s is damaged: part %q: %s (%w)", path, pe.Part, res.Problem, err)
	}
	return res, fmt.Errorf("backup %s is refused: %s (%w)", path, res.Problem, err)
}

// problemOf is what the error says is wrong, in a word or two.
func problemOf(err error) string {
	for _, s := range []error{backup.ErrTruncated, backup.ErrChecksum, backup.ErrMissingPart, backup.ErrUnknownPart,
		backup.ErrDuplicatePart, backup.ErrUnknownFormat, backup.ErrCorrupt} {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	if errors.Is(err, os.ErrNotExist) {
		return "no such file"
	}
	return "unreadable"
}

func printManifest(w io.Writer, m backup.Manifest, file string) {
	var total int64
	for _, p := range m.Parts {
		total += p.Length
	}
	fmt.Fprintf(w, "%s: cluster %s, created %s, shard map v%d, %d parts, %s of data\n", file, orDash(m.ClusterID),
		m.Created.Format(time.RFC3339), m.ShardMapVersion, len(m.Parts), humanBytes(total))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PART\tGROUP\tAPPLIED\tBYTES\tSLOTS\tDIGEST")
	for _, p := range m.Parts {
		var rs []string
		for _, r := range p.Ranges {
			rs = append(rs, fmt.Sprintf("%d-%d", r.First, r.Last))
		}
		digest := p.Digest
		if len(digest) > 16 {
			digest = digest[:16] + "…"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\n", p.Name, p.GroupID, p.AppliedIndex, p.Length, orDash(strings.Join(rs, ",")), orDash(digest))
	}
	tw.Flush()
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
