// Command syncctl talks to a syncstore cluster: append, pull, head, send,
// history, watch, status, bench, and the cluster's shape: node list/remove,
// group list/transfer-leader, replica move. Output is for people by default, JSON with --json.
//
// Exit codes: 0 success, 1 the request failed, 2 bad usage.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/rpc/client"
)

const (
	exitFailed = 1
	exitUsage  = 2
)

// globals are the flags every subcommand shares.
type globals struct {
	addr    string
	json    bool
	base64  bool
	timeout time.Duration
	stale   bool
	sec     security
	out     io.Writer
}

// security is how syncctl connects: TLS files and a bearer token.
type security struct {
	tls                       bool
	ca, cert, key, serverName string
	token, tokenFile          string
	flags                     *pflag.FlagSet // to tell a --token given from the environment's
}

func main() {
	g := &globals{out: os.Stdout}
	root := newRoot(g)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "syncctl:", describe(err))
		os.Exit(exitStatus(err))
	}
}

// exitStatus is the exit code of a command's error: 2 for bad usage, an
// error's own ExitCode (status: 3 degraded, 4 no cluster), else 1.
func exitStatus(err error) int {
	var ec interface{ ExitCode() int }
	switch {
	case errors.As(err, new(usageError)):
		return exitUsage
	case errors.As(err, &ec):
		return ec.ExitCode()
	}
	return exitFailed
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "syncctl",
		Short:         "Operate and query a syncstore cluster",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.addr, "addr", defaultAddr(), "gRPC address of any node (comma-separated for several; default from $"+addrEnv+")")
	pf.BoolVar(&g.json, "json", false, "print JSON")
	pf.BoolVar(&g.base64, "base64", false, "print payloads and record values as base64 (payload_base64, value_base64), not only those that are not UTF-8")
	pf.DurationVar(&g.timeout, "timeout", 10*time.Second, "deadline of one command (bench: of each append)")
	g.sec.register(pf)
	root.AddCommand(newAppendCmd(g), newPullCmd(g), newHeadCmd(g), newSendCmd(g), newHistoryCmd(g), newWatchCmd(g), newStatusCmd(g), newBenchCmd(g), newCollectionCmd(g),
		newDeviceCmd(g), newReadCmd(g), newConversationsCmd(g), newNodeCmd(g), newGroupCmd(g), newReplicaCmd(g), newSlotsCmd(g), newMoveCmd(g), newRebalanceCmd(g), newVersionCmd(g), newTokenCmd(g), newBackupCmd(g))
	root.AddCommand(newUpgradeCmd(g))
	refuseUnknownSubcommands(root)
	return root
}

// addrEnv sets --addr's default, as ETCDCTL_ENDPOINTS does etcdctl's.
const addrEnv = "SYNCCTL_ADDR"

func defaultAddr() string {
	if a := os.Getenv(addrEnv); a != "" {
		return a
	}
	return "127.0.0.1:7400"
}

// refuseUnknownSubcommands makes a word that names no subcommand a usage
// error (exit 2) at every level: cobra returns a plain error for the root
// and prints help with success for a command that only groups others.
// Such a command given no word still prints its help.
func refuseUnknownSubcommands(cmd *cobra.Command) {
	if !cmd.HasSubCommands() {
		return
	}
	if cmd.Args == nil {
		cmd.Args = func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
			if s := c.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, ", "))
			}
			return usageError{errors.New(msg)}
		}
	}
	if cmd.Run == nil && cmd.RunE == nil {
		cmd.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	}
	for _, sub := range cmd.Commands() {
		refuseUnknownSubcommands(sub)
	}
}

type usageError struct{ error }

// describe renders a gRPC status as "Code: message" rather than Go's
// "rpc error: code = ... desc = ...".
func describe(err error) string {
	if st, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s: %s", st.Code(), st.Message())
	}
	return err.Error()
}

func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// client is a client for --addr. It fails fast: a command gives up as soon
// as every address refused the connection, rather than at --timeout.
func (g *globals) client() (*client.Client, error) {
	opts, err := g.sec.options()
	if err != nil {
		return nil, err
	}
	opts.FailFast = true
	cl, err := client.New(strings.Split(g.addr, ","), opts)
	if errors.Is(err, client.ErrInvalidArgument) {
		return nil, usageError{err} // a bad --addr or --token
	}
	return cl, err
}

// call runs fn with a client for --addr and the --timeout deadline.
func (g *globals) call(fn func(context.Context, *client.Client) error) error {
	cl, err := g.client()
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	return fn(ctx, cl)
}

func (g *globals) consistency() client.Consistency {
	if g.stale {
		return client.Stale
	}
	return client.Linearizable
}

// print writes v as indented JSON with --json, else calls human.
func (g *globals) print(v any, human func(w io.Writer)) error {
	if g.json {
		enc := json.NewEncoder(g.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	human(g.out)
	return nil
}
