package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/syncstore/syncstore/internal/bench"
)

// benchContext bounds a whole bench run: its duration plus room to finish.
func benchContext(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d+2*time.Minute)
}

func newBenchPushCmd(g *globals) *cobra.Command {
	cfg := bench.PushConfig{Timelines: 1000, Appenders: 32, PayloadBytes: 256, Duration: 10 * time.Second}
	cmd := &cobra.Command{
		Use:   "push",
		Short: "Measure push latency: from an Append's acknowledgement to a subscriber receiving the entry",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.OpTimeout = g.timeout
			cl, err := g.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, cancel := benchContext(cfg.Duration)
			defer cancel()
			res, err := bench.Push(ctx, cl, cfg)
			if err != nil {
				return err
			}
			return g.print(res, func(w io.Writer) {
				fmt.Fprintf(w, "push: %d subscribed timelines, %d appenders, %d-byte payloads, %s against %s\n",
					cfg.Timelines, cfg.Appenders, cfg.PayloadBytes, cfg.Duration, strings.ReplaceAll(g.addr, ",", ", "))
				fmt.Fprintf(w, "appended %d, received %d, missing %d\n", res.Appended, res.Received, res.Missing)
				fmt.Fprintf(w, "ack -> received: p50 %s  p90 %s  p99 %s  max %s\n", ms(res.P50), ms(res.P90), ms(res.P99), ms(res.Max))
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Timelines, "timelines", cfg.Timelines, "timelines subscribed and appended to")
	f.IntVar(&cfg.Appenders, "clients", cfg.Appenders, "concurrent appenders")
	f.IntVar(&cfg.PayloadBytes, "size", cfg.PayloadBytes, "payload bytes per append")
	f.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long to append")
	return cmd
}

func newBenchFanOutCmd(g *globals) *cobra.Command {
	cfg := bench.FanOutConfig{Members: 200, Messages: 100, PayloadBytes: 256}
	cmd := &cobra.Command{
		Use:   "fanout",
		Short: "Measure fan-out: how long until every member of a conversation has a message",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.OpTimeout = g.timeout
			cl, err := g.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, cancel := benchContext(time.Duration(cfg.Messages) * g.timeout)
			defer cancel()
			res, err := bench.FanOut(ctx, cl, cfg)
			if err != nil {
				return err
			}
			return g.print(res, func(w io.Writer) {
				fmt.Fprintf(w, "fanout: %d members, %d messages one at a time, %d-byte payloads, against %s\n",
					cfg.Members, cfg.Messages, cfg.PayloadBytes, strings.ReplaceAll(g.addr, ",", ", "))
				fmt.Fprintf(w, "sent %d, incomplete %d; send p50 %s\n", res.Sent, res.Incomplete, ms(res.SendLatency))
				fmt.Fprintf(w, "ack -> all members: p50 %s  p99 %s  max %s\n", ms(res.AckP50), ms(res.AckP99), ms(res.AckMax))
				fmt.Fprintf(w, "send -> all members: p50 %s  p99 %s\n", ms(res.SendP50), ms(res.SendP99))
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Members, "members", cfg.Members, "conversation members (the sender included)")
	f.IntVar(&cfg.Messages, "messages", cfg.Messages, "messages to send")
	f.IntVar(&cfg.PayloadBytes, "size", cfg.PayloadBytes, "payload bytes per message")
	return cmd
}

func newBenchReconnectCmd(g *globals) *cobra.Command {
	cfg := bench.ReconnectConfig{Entries: 10000, Missed: 10, PayloadBytes: 256, PageSize: 1000}
	cmd := &cobra.Command{
		Use:   "reconnect",
		Short: "Compare the bytes a reconnecting device pulls (from its seq) with fetching the whole timeline",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, cancel := benchContext(10 * time.Minute)
			defer cancel()
			res, err := bench.Reconnect(ctx, cl, strings.Split(g.addr, ",")[0], cfg)
			if err != nil {
				return err
			}
			return g.print(res, func(w io.Writer) {
				fmt.Fprintf(w, "reconnect: %d entries of %d bytes; the device missed the last %d\n", cfg.Entries, cfg.PayloadBytes, cfg.Missed)
				fmt.Fprintf(w, "pull from its seq: %d entries, %d bytes\n", res.DeltaEntries, res.DeltaBytes)
				fmt.Fprintf(w, "whole timeline:    %d entries, %d bytes in %d pulls (%.0fx)\n", res.FullEntries, res.FullBytes, res.FullCalls, float64(res.FullBytes)/float64(max(1, res.DeltaBytes)))
				fmt.Fprintf(w, "nothing changed:   %d bytes\n", res.UpToDateBytes)
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Entries, "entries", cfg.Entries, "entries in the timeline")
	f.IntVar(&cfg.Missed, "missed", cfg.Missed, "entries the device missed")
	f.IntVar(&cfg.PayloadBytes, "size", cfg.PayloadBytes, "payload bytes per entry")
	return cmd
}

func newBenchRecordsCmd(g *globals) *cobra.Command {
	cfg := bench.RecordsSyncConfig{Records: 100000, Changes: 10, ValueBytes: 64, Many: 200, ManyRecords: 50, Repeats: 9}
	cmd := &cobra.Command{
		Use:   "records",
		Short: "Compare syncing a collection from a version with reading it whole, and SyncMany with one Sync per collection",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, cancel := benchContext(20 * time.Minute)
			defer cancel()
			res, err := bench.RecordsSync(ctx, cl, strings.Split(g.addr, ",")[0], cfg)
			if err != nil {
				return err
			}
			return g.print(res, func(w io.Writer) {
				line := func(name string, c bench.Cost) {
					fmt.Fprintf(w, "%-32s %8s  %10d bytes  %4d calls  %6d records\n", name, ms(c.Latency), c.Bytes, c.Calls, c.Records)
				}
				fmt.Fprintf(w, "records: %d records of %d bytes, %d changed; %d collections of %d, one change each (medians of %d)\n",
					cfg.Records, cfg.ValueBytes, cfg.Changes, cfg.Many, cfg.ManyRecords, cfg.Repeats)
				line("Sync from the device's version", res.Sync)
				line("full read (Get pages)", res.FullRead)
				line(fmt.Sprintf("SyncMany of %d", cfg.Many), res.SyncMany)
				line(fmt.Sprintf("%d separate Syncs", cfg.Many), res.SeparateSyncs)
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Records, "records", cfg.Records, "records in the big collection")
	f.IntVar(&cfg.Changes, "changes", cfg.Changes, "records changed since the device's version")
	f.IntVar(&cfg.ValueBytes, "size", cfg.ValueBytes, "value bytes per record")
	f.IntVar(&cfg.Many, "collections", cfg.Many, "collections of the reconnecting device")
	f.IntVar(&cfg.ManyRecords, "collection-records", cfg.ManyRecords, "records in each of them")
	f.IntVar(&cfg.Repeats, "repeats", cfg.Repeats, "times each read is measured")
	return cmd
}

func newBenchDeviceReconnectCmd(g *globals) *cobra.Command {
	cfg := bench.DeviceReconnectConfig{Conversations: 50, Active: 10, PerActive: 3, PayloadBytes: 256, Repeats: 9}
	cmd := &cobra.Command{
		Use:   "device-reconnect",
		Short: "Measure what a reconnecting device pays for its conversation list and new messages, against reading them whole",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, cancel := benchContext(10 * time.Minute)
			defer cancel()
			res, err := bench.DeviceReconnect(ctx, cl, strings.Split(g.addr, ",")[0], cfg)
			if err != nil {
				return err
			}
			return g.print(res, func(w io.Writer) {
				line := func(name string, c bench.Cost) {
					fmt.Fprintf(w, "%-44s %8s  %8d bytes  %3d calls  %5d records+entries\n", name, ms(c.Latency), c.Bytes, c.Calls, c.Records)
				}
				fmt.Fprintf(w, "device reconnect: %d conversations, %d with %d new messages of %d bytes (medians of %d)\n",
					cfg.Conversations, cfg.Active, cfg.PerActive, cfg.PayloadBytes, cfg.Repeats)
				line(fmt.Sprintf("Sync list + Pull from cursor (%d records, %d msgs)", res.Changed, res.Messages), res.Delta)
				line("list read whole + every conversation pulled", res.Full)
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Conversations, "conversations", cfg.Conversations, "conversations of the user")
	f.IntVar(&cfg.Active, "active", cfg.Active, "conversations with new messages")
	f.IntVar(&cfg.PerActive, "messages", cfg.PerActive, "new messages in each of them")
	f.IntVar(&cfg.PayloadBytes, "size", cfg.PayloadBytes, "payload bytes per message")
	f.IntVar(&cfg.Repeats, "repeats", cfg.Repeats, "times each read is measured")
	return cmd
}
