package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/syncstore/syncstore/internal/bench"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

func newBenchCmd(g *globals) *cobra.Command {
	cfg := bench.Config{Clients: 1, PayloadBytes: 256, Timelines: 1000, Duration: 10 * time.Second}
	var (
		conns int
		op    string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Drive appends against a running cluster and print appends/s and latency percentiles",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.OpTimeout = g.timeout
			conns = max(1, min(conns, cfg.Clients))
			clients := make([]*client.Client, conns)
			for i := range clients {
				cl, err := g.client()
				if err != nil {
					return err
				}
				defer cl.Close()
				clients[i] = cl
			}
			do := func(ctx context.Context, w int, tl, key string, payload []byte) error {
				_, err := clients[w%conns].Append(ctx, tl, payload, client.AppendOptions{IdempotencyKey: key})
				return err
			}
			switch op {
			case "append":
			case "record-write": // a put of one record into a collection per operation
				do = func(ctx context.Context, w int, coll, key string, payload []byte) error {
					_, err := clients[w%conns].Write(ctx, "c/"+coll, []*syncv1.RecordOp{client.Put(key, payload)}, client.WriteOptions{IdempotencyKey: key})
					return err
				}
			default:
				return usageError{fmt.Errorf("--op %q: want append or record-write", op)}
			}
			res, err := bench.Run(context.Background(), cfg, do)
			if err != nil {
				return usageError{err}
			}
			return g.print(res, func(w io.Writer) { printBench(w, g.addr, res) })
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Clients, "clients", cfg.Clients, "concurrent appenders")
	f.IntVar(&cfg.PayloadBytes, "size", cfg.PayloadBytes, "payload bytes per append")
	f.IntVar(&cfg.Timelines, "timelines", cfg.Timelines, "timelines to spread appends over")
	f.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long to run (0 with --count: until the count is reached)")
	f.IntVar(&cfg.Count, "count", 0, "stop after this many appends (0: run for --duration)")
	f.Float64Var(&cfg.Rate, "rate", 0, "appends per second in all, paced across the clients (0: each client flat out)")
	f.IntVar(&conns, "conns", 4, "gRPC client connections the appenders share")
	f.StringVar(&op, "op", "append", "what each operation is: append (to a timeline) or record-write (a put into a collection, --timelines of them)")
	cmd.AddCommand(newBenchPushCmd(g), newBenchFanOutCmd(g), newBenchReconnectCmd(g), newBenchRecordsCmd(g))
	return cmd
}

func printBench(w io.Writer, addr string, r bench.Result) {
	c := r.Config
	span := c.Duration.String()
	if c.Count > 0 {
		span = fmt.Sprintf("%d appends", c.Count)
	}
	fmt.Fprintf(w, "bench: %d clients, %d-byte payloads, %d timelines, %s against %s\n",
		c.Clients, c.PayloadBytes, c.Timelines, span, strings.ReplaceAll(addr, ",", ", "))
	fmt.Fprintf(w, "appends: %d ok, %d errors in %.2fs = %.0f appends/s\n", r.OK, r.Errors, r.Elapsed.Seconds(), r.PerSecond)
	fmt.Fprintf(w, "latency: p50 %s  p90 %s  p99 %s  max %s\n", ms(r.P50), ms(r.P90), ms(r.P99), ms(r.Max))
	if r.FirstError != "" {
		fmt.Fprintf(w, "first error: %s\n", r.FirstError)
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }
