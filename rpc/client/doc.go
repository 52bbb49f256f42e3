// Package client is the Go client of syncstore. A Client is made with New
// from the gRPC address of one or more nodes and is safe for concurrent use.
//
// # Routing
//
// The client fetches the cluster's shard map and sends each request about a
// timeline, collection or user to the node it believes leads that group;
// Admin calls go to the meta group's leader. It follows NotLeader answers
// to the leader they name. Before it has a shard map (it asks at most once
// a second), any node takes the request and forwards it.
//
// # Retries and their defaults
//
// Each attempt is bounded by Options.AttemptTimeout (default 3s). A call is
// retried when its attempt failed with:
//
//   - Unavailable: a node down or refusing connections, no leader (an
//     election), a node shutting down, an outcome the node could not learn;
//   - DeadlineExceeded of the attempt (not of the call);
//   - Aborted: the group no longer serves the key (the shard map is
//     refetched).
//
// Between attempts the client waits from Options.MinBackoff (default 10ms),
// doubling up to Options.MaxBackoff (default 500ms); a leader hint is
// followed at once. Retries go on until the caller's context ends, so give
// every call a deadline: with context.Background() a call to a cluster that
// is down waits for it forever. The error at the deadline matches the
// context's error and carries the last answer (see Errors). With
// Options.FailFast a call also gives up as soon as every address it can go
// to has refused the connection since a node last answered it; that suits
// command-line tools, not servers riding out a restart.
//
// Every other answer is returned at once: it is the cluster's, and a retry
// would repeat it. Writes (Append, Send, Write, and the Devices calls,
// which are idempotent) are safe to retry: an Append, a Send or a Write
// carries one idempotency key across its attempts (made up when the caller
// gives none), so a retry never applies it twice.
//
// A Subscription retries forever, by itself, until its context ends or it
// is closed (re-adding a timeline waits from 50ms, doubling up to 2s; a
// stream silent for SubscribeOptions.StreamSilence, default 5s, is taken
// for dead); it ends early only on an answer that retrying would repeat
// (see Subscription.Err), and with FailFast, when every node refuses.
//
// # Errors
//
// Every error the cluster answered matches, with errors.Is, the sentinel of
// its gRPC code (ErrNotFound, ErrInvalidArgument, ErrFailedPrecondition,
// ErrPermissionDenied, ErrUnauthenticated, ErrUnavailable …), and an error
// about addresses that took no connection at all matches ErrUnreachable
// too. The errors are *Error values, which keep status.Code and
// status.FromError working, with the status details.
//
// # Security
//
// Options.TLS sets the connections' TLS (LoadTLS reads the CA and an
// optional client certificate for mutual TLS from PEM files), Options.Token
// a bearer token sent with every call (only over TLS), and
// Options.DialOptions any other grpc.DialOption.
package client
