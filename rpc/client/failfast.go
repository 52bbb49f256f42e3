package client

import (
	"context"
	"errors"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
)

// checkAddr refuses an address grpc could only fail on later with a
// puzzling message ("produced zero addresses"): it must be host:port.
func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return newError(codes.InvalidArgument, nil, "client: address %q is not host:port: %v", addr, strings.TrimPrefix(err.Error(), "address "+addr+": "))
	}
	if host == "" {
		return newError(codes.InvalidArgument, nil, "client: address %q is not host:port: the host is empty", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return newError(codes.InvalidArgument, nil, "client: address %q is not host:port: port %q is not a number in 1..65535", addr, port)
	}
	return nil
}

// unreachableCause says why an attempt at conn failed without reaching a
// server: grpc keeps a channel in TRANSIENT_FAILURE after a refused dial,
// a failed name lookup or a failed TLS handshake, until it connects again.
// (grpc updates the channel's state just after failing the calls, so the
// first refusal may read as a server's Unavailable; the next attempt's
// does not.)
func unreachableCause(conn *grpc.ClientConn, err error) (string, bool) {
	if conn == nil || status.Code(err) != codes.Unavailable || conn.GetState() != connectivity.TransientFailure {
		return "", false
	}
	// The innermost status's message, not the text of what wraps it.
	var gs interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &gs) {
		return "", false
	}
	return connCause(gs.GRPCStatus().Message()), true
}

// dialPrefix is the "dial tcp 127.0.0.1:7999: " in front of a dial error:
// the message names the address already.
var dialPrefix = regexp.MustCompile(`^dial \w+ \S+: `)

// connCause trims grpc's wrapping off a connection error: "connection
// error: desc = \"transport: Error while dialing: dial tcp 127.0.0.1:7999:
// connect: connection refused\"" is "connect: connection refused".
func connCause(msg string) string {
	if desc, ok := strings.CutPrefix(msg, "connection error: desc = "); ok {
		msg = desc
		if s, err := strconv.Unquote(desc); err == nil {
			msg = s
		}
	}
	msg = strings.TrimPrefix(msg, "transport: ")
	msg = strings.TrimPrefix(msg, "Error while dialing: ")
	msg = dialPrefix.ReplaceAllString(msg, "")
	if strings.Contains(msg, "produced zero addresses") {
		msg = "the name resolves to no address"
	}
	return msg
}

// unreachableError names the addresses that could not be connected and why.
func unreachableError(refused map[string]string) *Error {
	addrs := make([]string, 0, len(refused))
	for a := range refused {
		addrs = append(addrs, a)
	}
	slices.Sort(addrs)
	parts := make([]string, len(addrs))
	for i, a := range addrs {
		parts[i] = a + ": " + refused[a]
	}
	e := newError(codes.Unavailable, nil, "client: cannot reach %s", strings.Join(parts, "; "))
	e.unreachable = true
	return e
}

// candidates are the addresses a call about timeline can go to: its
// group's replicas when the shard map names them, else the seeds (the one
// pinned).
func (c *Client) candidates(timeline string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.opts.Pinned {
		return c.seeds[:1]
	}
	if timeline != "" && c.routes != nil {
		if _, addrs := c.replicasLocked(timeline); len(addrs) > 0 {
			return addrs
		}
	}
	return c.seeds
}

// allRefused says whether every address a call about timeline can go to is
// in refused.
func (c *Client) allRefused(timeline string, refused map[string]string) bool {
	for _, a := range c.candidates(timeline) {
		if _, ok := refused[a]; !ok {
			return false
		}
	}
	return true
}

// unreachable is unreachableCause for the connection to addr.
func (c *Client) unreachable(addr string, err error) (string, bool) {
	c.mu.Lock()
	conn := c.conns[addr]
	c.mu.Unlock()
	return unreachableCause(conn, err)
}

// failedFast says whether err is FailFast's giving up (not a context's end
// whose last error was a refusal).
func (c *Client) failedFast(err error) bool {
	return c.opts.FailFast && errors.Is(err, ErrUnreachable) &&
		!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)
}
