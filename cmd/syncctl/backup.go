package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/syncstore/syncstore/backup"
	"github.com/syncstore/syncstore/backup/take"
)

func newBackupCmd(g *globals) *cobra.Command {
	var out string
	var force bool
	var startTimeout time.Duration
	var maxMBps float64
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
it); nothing bounds the streaming of a group's data. --max-mb-per-s paces
the streaming, spreading the leaders' work over a longer backup so that
writes keep their latency (README, Backup, has what an unpaced backup
costs them).`,
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
			if maxMBps < 0 {
				return usageError{fmt.Errorf("--max-mb-per-s %v: want 0 (no pacing) or more", maxMBps)}
			}
			opts := take.Options{Out: out, Force: force, Progress: g.backupProgress(cmd.ErrOrStderr()), MaxBytesPerSecond: int64(maxMBps * 1e6)}
			res, err := take.Run(ctx, take.ClusterSource(cl, g.timeout, startTimeout), opts)
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
	cmd.Flags().Float64Var(&maxMBps, "max-mb-per-s", 0, "stream at most this many MB (10^6 bytes) a second; 0 streams as fast as the cluster sends")
	cmd.AddCommand(newBackupVerifyCmd(g))
	return cmd
}

// backupProgress is a bar on stderr when it is a terminal and the output
// is not JSON; else nothing (the summary says it all at the end).
func (g *globals) backupProgress(stderr io.Writer) take.Progress {
	fi, err := os.Stderr.Stat()
	if g.json || stderr != os.Stderr || err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return take.NoProgress{}
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

func (b *barProgress) Start(parts int) {
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

func (b *barProgress) Group(name string) { b.name = name; b.describe() }
func (b *barProgress) Bytes(n int64)     { _ = b.bar.Set64(n) }
func (b *barProgress) PartDone()         { b.done++; b.describe() }
func (b *barProgress) Finish()           { _ = b.bar.Finish() }

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
