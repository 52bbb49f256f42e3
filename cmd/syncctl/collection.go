package main

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"sync"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

func newCollectionCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "collection",
		Short: "Write, read and sync versioned record collections",
	}
	cmd.AddCommand(newCollectionWriteCmd(g, false), newCollectionWriteCmd(g, true), newCollectionGetCmd(g), newCollectionSyncCmd(g), newCollectionWatchCmd(g))
	return cmd
}

// newCollectionWriteCmd is "put COLLECTION KEY VALUE" or "delete COLLECTION KEY".
func newCollectionWriteCmd(g *globals, isDelete bool) *cobra.Command {
	var (
		ifVersion int64
		key       string
	)
	value := payloadInput{what: "value"}
	use, short, nargs := "put COLLECTION KEY (VALUE | - | --file PATH)", "Set a record (the value from the argument, stdin or a file) and print the collection version the write produced", rangeArgs(2, 3)
	if isDelete {
		use, short, nargs = "delete COLLECTION KEY", "Delete a record (leaving a tombstone) and print the version the write produced", exactArgs(2)
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  nargs,
		RunE: func(cmd *cobra.Command, args []string) error {
			op := client.Delete(args[1])
			if !isDelete {
				data, err := value.read(cmd, args, 2)
				if err != nil {
					return err
				}
				op = client.Put(args[1], data)
			}
			o := client.WriteOptions{IdempotencyKey: key}
			if ifVersion >= 0 {
				o.Conditions = append(o.Conditions, client.IfVersion(args[1], uint64(ifVersion)))
			}
			var resp *syncv1.WriteResponse
			err := g.call(func(ctx context.Context, cl *client.Client) (err error) {
				resp, err = cl.Write(ctx, args[0], []*syncv1.RecordOp{op}, o)
				return err
			})
			if err != nil {
				return err
			}
			out := struct {
				Collection   string `json:"collection"`
				Version      uint64 `json:"version"`
				Deduplicated bool   `json:"deduplicated,omitempty"`
			}{args[0], resp.GetVersion(), resp.GetDeduplicated()}
			return g.print(out, func(w io.Writer) {
				note := ""
				if out.Deduplicated {
					note = " (already applied with this key)"
				}
				fmt.Fprintf(w, "%s at version %d%s\n", out.Collection, out.Version, note)
			})
		},
	}
	cmd.Flags().Int64Var(&ifVersion, "if-version", -1, "write only if the record is at this version (0: only if it does not exist)")
	cmd.Flags().StringVar(&key, "key", "", "idempotency key (a retry with the same key writes nothing)")
	if !isDelete {
		value.register(cmd)
	}
	return cmd
}

// recordJSON is a record as syncctl prints it. A live record has "value"
// (its bytes as text, even when empty) or, when they are not UTF-8 or with
// --base64, "value_base64"; a tombstone has "deleted": true.
type recordJSON struct {
	Key         string  `json:"key"`
	Version     uint64  `json:"version"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 *string `json:"value_base64,omitempty"`
	Deleted     bool    `json:"deleted,omitempty"`
}

func (g *globals) recordsJSON(recs []*syncv1.Record) []recordJSON {
	out := make([]recordJSON, 0, len(recs))
	for _, r := range recs {
		j := recordJSON{Key: r.GetKey(), Version: r.GetVersion(), Deleted: r.GetDeleted()}
		if !j.Deleted {
			j.Value, j.ValueBase64 = g.bytesView(r.GetValue())
		}
		out = append(out, j)
	}
	return out
}

func printRecords(w io.Writer, recs []recordJSON) {
	for _, r := range recs {
		switch {
		case r.Deleted:
			fmt.Fprintf(w, "  %s @%d deleted\n", r.Key, r.Version)
		case r.ValueBase64 != nil:
			fmt.Fprintf(w, "  %s @%d = base64:%s\n", r.Key, r.Version, *r.ValueBase64)
		default:
			fmt.Fprintf(w, "  %s @%d = %q\n", r.Key, r.Version, *r.Value)
		}
	}
}

func newCollectionGetCmd(g *globals) *cobra.Command {
	var stale bool
	cmd := &cobra.Command{
		Use:   "get COLLECTION [KEY...]",
		Short: "Print records by key, or the whole collection (all pages)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cons := client.Linearizable
			if stale {
				cons = client.Stale
			}
			out := struct {
				Collection string       `json:"collection"`
				Version    uint64       `json:"version"`
				Digest     string       `json:"digest"`
				Records    []recordJSON `json:"records"`
			}{Collection: args[0], Records: []recordJSON{}}
			err := g.call(func(ctx context.Context, cl *client.Client) error {
				after := ""
				for first := true; ; first = false {
					resp, err := cl.Get(ctx, args[0], args[1:], after, pageLimit, cons)
					if err != nil {
						return err
					}
					if first { // a full read is as of its first page (then sync from there)
						out.Version, out.Digest = resp.GetVersion(), resp.GetDigest()
					}
					out.Records = append(out.Records, g.recordsJSON(resp.GetRecords())...)
					if !resp.GetMore() {
						return nil
					}
					after = resp.GetNextAfterKey()
				}
			})
			if err != nil {
				return err
			}
			return g.print(out, func(w io.Writer) {
				fmt.Fprintf(w, "%s at version %d, %d records, digest %s\n", out.Collection, out.Version, len(out.Records), out.Digest)
				printRecords(w, out.Records)
			})
		},
	}
	cmd.Flags().BoolVar(&stale, "stale", false, "read from the node's local replica, which may lag")
	return cmd
}

// pageLimit is the page size syncctl asks for.
const pageLimit = 500

func newCollectionSyncCmd(g *globals) *cobra.Command {
	var (
		since uint64
		limit uint32
	)
	cmd := &cobra.Command{
		Use:   "sync COLLECTION",
		Short: "Print the records changed after a version (one page)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var resp *syncv1.RecordSyncResponse
			err := g.call(func(ctx context.Context, cl *client.Client) (err error) {
				resp, err = cl.SyncRecords(ctx, args[0], since, limit, client.Linearizable)
				return err
			})
			if err != nil {
				return err
			}
			out := struct {
				Status  string       `json:"status"`
				Version uint64       `json:"version"`
				Digest  string       `json:"digest"`
				Changes []recordJSON `json:"changes"`
			}{syncStatusName(resp.GetStatus()), resp.GetVersion(), resp.GetDigest(), g.recordsJSON(resp.GetChanges())}
			return g.print(out, func(w io.Writer) {
				fmt.Fprintf(w, "%s: %s at version %d, %d changes, digest %s\n", args[0], out.Status, out.Version, len(out.Changes), out.Digest)
				printRecords(w, out.Changes)
			})
		},
	}
	cmd.Flags().Uint64Var(&since, "since", 0, "the version the client holds")
	cmd.Flags().Uint32Var(&limit, "limit", 100, "changed records per page")
	return cmd
}

func syncStatusName(s syncv1.RecordSyncStatus) string {
	switch s {
	case syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_OK:
		return "OK"
	case syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_UP_TO_DATE:
		return "UP_TO_DATE"
	case syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_MORE:
		return "MORE"
	case syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_RESET:
		return "RESET"
	case syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_AHEAD:
		return "AHEAD"
	}
	return s.String()
}

func newCollectionWatchCmd(g *globals) *cobra.Command {
	var since uint64
	cmd := &cobra.Command{
		Use:   "watch COLLECTION...",
		Short: "Follow collections from a version and print each change as it commits (push, with Sync whenever the stream cannot go on)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			var mu sync.Mutex // updates of several collections print whole
			errs := make(chan error, len(args))
			for _, coll := range args {
				go func() {
					errs <- cl.WatchCollection(ctx, coll, since, func(u client.CollectionUpdate) error {
						mu.Lock()
						defer mu.Unlock()
						out := struct {
							Collection  string       `json:"collection"`
							FromVersion uint64       `json:"from_version"`
							Version     uint64       `json:"version"`
							Replace     bool         `json:"replace,omitempty"`
							Digest      string       `json:"digest"`
							Changes     []recordJSON `json:"changes"`
						}{u.Collection, u.FromVersion, u.Version, u.Replace, u.Digest, g.recordsJSON(u.Changes)}
						return g.print(out, func(w io.Writer) {
							what := fmt.Sprintf("%d -> %d", out.FromVersion, out.Version)
							if out.Replace {
								what = fmt.Sprintf("read whole at %d", out.Version)
							}
							fmt.Fprintf(w, "%s %s, %d changes\n", out.Collection, what, len(out.Changes))
							printRecords(w, out.Changes)
						})
					})
				}()
			}
			for range args {
				if err := <-errs; err != nil && ctx.Err() == nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().Uint64Var(&since, "since", 0, "the version the watcher holds (0: everything)")
	return cmd
}
