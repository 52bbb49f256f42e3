package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/syncstore/syncstore/internal/bench"
)

func newBenchFillCmd(g *globals) *cobra.Command {
	cfg := bench.FillConfig{Entries: 1_000_000, Members: 500, Users: 10_000, PayloadBytes: 100, Collections: 10_000, Records: 10, RecordsPerWrite: 10, Clients: 16}
	cmd := &cobra.Command{
		Use:   "fill",
		Short: "Fill a cluster with timeline entries (by conversation sends) and collections, for measuring a full cluster (backup, restore)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			cfg.OpTimeout = g.timeout
			ctx, cancel := benchContext(time.Hour)
			defer cancel()
			res, err := bench.Fill(ctx, cl, cfg)
			if err != nil {
				return err
			}
			return g.print(res, func(w io.Writer) {
				fmt.Fprintf(w, "filled: %d entries by %d sends to %d members, %d collections of %d records, in %s\n",
					res.Entries, res.Sends, cfg.Members, res.Collections, cfg.Records, res.Took.Round(time.Millisecond))
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Entries, "entries", cfg.Entries, "timeline entries to write at least")
	f.IntVar(&cfg.Members, "members", cfg.Members, "members of each conversation, the sender included (at most the server's --light-above keeps entries full)")
	f.IntVar(&cfg.Users, "users", cfg.Users, "users the members are drawn from")
	f.IntVar(&cfg.PayloadBytes, "size", cfg.PayloadBytes, "payload bytes of each message and record")
	f.IntVar(&cfg.Collections, "collections", cfg.Collections, "collections to write")
	f.IntVar(&cfg.Records, "records", cfg.Records, "records in each collection")
	f.IntVar(&cfg.RecordsPerWrite, "records-per-write", cfg.RecordsPerWrite, "records put by one write")
	f.IntVar(&cfg.Clients, "clients", cfg.Clients, "concurrent senders, and as many collection writers")
	return cmd
}
