// Command dev-certs writes a development CA, node and client certificates,
// tokens and a gossip key into a directory (see internal/devcerts), and
// prints how syncd and syncctl use them. scripts/dev-certs.sh runs it.
//
//	dev-certs [-hosts NAME,IP,...] [-force] DIR [NODE ...]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/syncstore/syncstore/internal/devcerts"
)

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(usageError)):
		fmt.Fprintln(os.Stderr, "dev-certs:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "dev-certs:", err)
		os.Exit(1)
	}
}

type usageError struct{ error }

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev-certs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: dev-certs [-hosts NAME,IP,...] [-force] DIR [NODE ...]   (nodes: n1 n2 n3 by default)")
		fs.PrintDefaults()
	}
	hosts := fs.String("hosts", "", "extra DNS names and IP addresses every node certificate carries, comma-separated")
	force := fs.Bool("force", false, "overwrite files that exist in DIR (a new CA: every old certificate stops working)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() < 1 {
		fs.Usage()
		return usageError{errors.New("missing DIR")}
	}
	dir, err := filepath.Abs(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("directory: %w", err)
	}
	opts := devcerts.Options{Nodes: fs.Args()[1:], Overwrite: *force}
	if *hosts != "" {
		opts.Hosts = strings.Split(*hosts, ",")
	}
	b, err := devcerts.New(opts)
	if err != nil {
		return usageError{err}
	}
	files, err := b.Write(dir, *force)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote into %s:\n", dir)
	for _, f := range files {
		fmt.Fprintf(stdout, "  %-22s %04o  %s\n", f.Name, f.Mode, f.What)
	}
	examples(stdout, dir, b.NodeNames)
	return nil
}

// examples prints a local cluster's command lines, with the ports of the
// README's three nodes on one machine (node i: 7400+10i, +1, +2).
func examples(w io.Writer, dir string, nodes []string) {
	p := func(name string) string { return shellQuote(filepath.Join(dir, name)) }
	fmt.Fprintf(w, "\nA local cluster with TLS, peer mTLS, encrypted gossip and tokens:\n\n")
	first := ""
	for i, n := range nodes {
		base := 7400 + 10*i
		grpc := fmt.Sprintf("127.0.0.1:%d", base)
		join := ""
		if i == 0 {
			first = grpc
		} else {
			join = " --join " + first
		}
		fmt.Fprintf(w, "syncd --node-id %s --data-dir %s --grpc-addr %s --raft-addr 127.0.0.1:%d --gossip-addr 127.0.0.1:%d \\\n", n, n, grpc, base+1, base+2)
		fmt.Fprintf(w, "  --tls-cert %s --tls-key %s --client-ca %s \\\n", p(n+".pem"), p(n+"-key.pem"), p("ca.pem"))
		fmt.Fprintf(w, "  --peer-cert %s --peer-key %s --peer-ca %s \\\n", p(n+".pem"), p(n+"-key.pem"), p("ca.pem"))
		fmt.Fprintf(w, "  --gossip-key-file %s --token-file %s%s &\n", p("gossip.key"), p("tokens.txt"), join)
	}
	fmt.Fprintf(w, "\nsyncctl --addr %s --ca %s --token-file %s append alice hello\n", first, p("ca.pem"), p("token-app"))
	fmt.Fprintf(w, "syncctl --addr %s --ca %s --cert %s --key %s status\n", first, p("ca.pem"), p("client-admin.pem"), p("client-admin-key.pem"))
	fmt.Fprintf(w, "export SYNCCTL_ADDR=%s SYNCCTL_CA=%s SYNCCTL_TOKEN=\"$(cat %s)\"   # a reader, from the environment\n", first, p("ca.pem"), p("token-reader"))
	fmt.Fprintf(w, "\nOne CA signs nodes and clients here (syncd takes as peers only certificates for both serverAuth and clientAuth); in production give peers a CA of their own.\n")
	keys := make([]string, 0, len(nodes)+1)
	for _, n := range nodes {
		keys = append(keys, p(n+"-key.pem"))
	}
	keys = append(keys, p("gossip.key"))
	fmt.Fprintf(w, "deploy/compose.yaml runs syncd as uid 10001, which must read the node keys and gossip key: sudo chown 10001:10001 %s\n", strings.Join(keys, " "))
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+=:,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
