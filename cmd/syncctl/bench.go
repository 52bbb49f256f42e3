package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/syncstore/syncstore/internal/bench"
	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

func newBenchCmd(g *globals) *cobra.Command {
	cfg := bench.Config{Clients: 1, PayloadBytes: 256, Timelines: 1000, Duration: 10 * time.Second}
	var (
		conns int
		op    string
		slots string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Drive appends against a running cluster and print appends/s and latency percentiles",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.OpTimeout = g.timeout
			if slots != "" {
				r, err := parseSlotRange(slots)
				if err != nil {
					return usageError{err}
				}
				cfg.Slots = []shard.Range{r}
			}
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
			case "login": // a new session of one of four devices (one per class) of a user
				classes := []string{"phone", "pad", "desktop", "web"}
				do = func(ctx context.Context, w int, user, key string, _ []byte) error {
					_, err := clients[w%conns].Login(ctx, "login-"+user, fmt.Sprint("dev-", w%4), classes[w%4], key, nil) // apart from the ack bench's users
					return err
				}
			case "ack": // a device's cursor on its user's timeline (set up: one session and one entry per user)
				if err := setUpAcks(g, clients[0], cfg.Timelines); err != nil {
					return err
				}
				do = func(ctx context.Context, w int, user, key string, _ []byte) error {
					_, err := clients[w%conns].Ack(ctx, user, "bench-device", user, 1)
					return err
				}
			default:
				return usageError{fmt.Errorf("--op %q: want append, record-write, login or ack", op)}
			}
			// SIGINT or SIGTERM ends the run early, with its results.
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := bench.Run(ctx, cfg, do)
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
	f.StringVar(&slots, "slots", "", "FIRST-LAST: put every timeline in these slots (e.g. those a move takes, or the others)")
	f.IntVar(&conns, "conns", 4, "gRPC client connections the appenders share")
	f.StringVar(&op, "op", "append", "what each operation is: append (to a timeline), record-write (a put into a collection, --timelines of them), login (a new session of a user's device, --timelines users) or ack (a device's cursor)")
	cmd.AddCommand(newBenchPushCmd(g), newBenchFanOutCmd(g), newBenchReconnectCmd(g), newBenchRecordsCmd(g), newBenchDeviceReconnectCmd(g), newBenchFillCmd(g))
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
	fmt.Fprintf(w, "latency: p50 %s  p90 %s  p99 %s  max %s; longest time without an acknowledgement %s\n", ms(r.P50), ms(r.P90), ms(r.P99), ms(r.Max), ms(r.MaxGap))
	if r.FirstError != "" {
		fmt.Fprintf(w, "first error: %s\n", r.FirstError)
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

// setUpAcks logs a device of each bench user in and appends one entry to
// its timeline, so that acks have a session and a head to reach.
func setUpAcks(g *globals, cl *client.Client, users int) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(users)*g.timeout)
	defer cancel()
	for i := range users {
		user := fmt.Sprintf("bench-%d", i)
		if _, err := cl.Login(ctx, user, "bench-device", "desktop", "bench-session-"+user, nil); err != nil {
			return fmt.Errorf("set up %s: %w", user, err)
		}
		head, err := cl.Head(ctx, user, client.Linearizable)
		if err != nil {
			return fmt.Errorf("set up %s: %w", user, err)
		}
		if head == 0 {
			if _, err := cl.Append(ctx, user, []byte("x"), client.AppendOptions{}); err != nil {
				return fmt.Errorf("set up %s: %w", user, err)
			}
		}
	}
	return nil
}
