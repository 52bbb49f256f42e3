package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/syncstore/syncstore/rpc/client"
	"github.com/syncstore/syncstore/rpc/syncv1"
)

// A client for a three-node cluster: append to a timeline, then pull what
// is after the seq the device holds.
func ExampleNew() {
	cl, err := client.New([]string{"10.0.0.1:7400", "10.0.0.2:7400", "10.0.0.3:7400"}, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()
	// Every call needs a deadline: the client retries until it ends.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// The idempotency key makes the caller's own retry of this append safe.
	resp, err := cl.Append(ctx, "alice", []byte("hello"), client.AppendOptions{IdempotencyKey: "msg-42"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("appended at seq", resp.GetSeq())

	var held uint64 // the last seq this device holds
	page, err := cl.Pull(ctx, "alice", held, 100, client.Linearizable)
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range page.GetEntries() {
		fmt.Printf("%d: %s\n", e.GetSeq(), e.GetPayload())
		held = e.GetSeq()
	}
	if page.GetStatus() == syncv1.PullStatus_PULL_STATUS_MORE {
		fmt.Println("more after", held)
	}
}

// Follow timelines as entries commit: each seq is delivered once, in order,
// across leader changes and node restarts.
func ExampleClient_Subscribe() {
	cl, err := client.New([]string{"127.0.0.1:7400"}, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	sub, err := cl.Subscribe(ctx, client.SubscribeOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	for _, tl := range []string{"alice", "bob"} {
		if err := sub.Add(tl, 0); err != nil { // from the first entry
			log.Fatal(err)
		}
	}
	for ev := range sub.Events() {
		switch {
		case ev.Reset: // retention trimmed entries before they were delivered
			fmt.Printf("%s: resuming at %d\n", ev.Timeline, ev.OldestSeq)
		case ev.Entry != nil:
			fmt.Printf("%s %d: %s\n", ev.Timeline, ev.Entry.GetSeq(), ev.Entry.GetPayload())
		}
	}
	// Events is closed: the context ended, or an answer retrying would
	// repeat (such as PermissionDenied) ended the subscription.
	if err := sub.Err(); err != nil {
		log.Fatal(err)
	}
}

// A cluster with TLS and tokens: trust the cluster's CA (and present a
// client certificate when the nodes ask for one), send a bearer token, and
// give up at once when no node takes a connection.
func ExampleLoadTLS() {
	tlsConfig, err := client.LoadTLS("/etc/syncstore/ca.pem", "", "", "")
	if err != nil {
		log.Fatal(err)
	}
	cl, err := client.New([]string{"n1.example:7400", "n2.example:7400"}, client.Options{
		TLS:      tlsConfig,
		Token:    "sst_…", // from syncctl token new; keep it out of the source
		FailFast: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	head, err := cl.Head(ctx, "alice", client.Linearizable)
	switch {
	case errors.Is(err, client.ErrUnauthenticated):
		log.Fatal("the token is missing or unknown: ", err)
	case errors.Is(err, client.ErrPermissionDenied):
		log.Fatal("the token's role may not read: ", err)
	case errors.Is(err, client.ErrUnreachable):
		log.Fatal("no node took a connection: ", err)
	case err != nil:
		log.Fatal(err)
	}
	fmt.Println("alice is at", head)
}

// Branch on the kind of an error with errors.Is, without decoding gRPC
// statuses.
func ExampleError() {
	_, err := client.New([]string{"nonsense"}, client.Options{})
	fmt.Println(errors.Is(err, client.ErrInvalidArgument))
	fmt.Println(err)
	// Output:
	// true
	// client: address "nonsense" is not host:port: missing port in address
}

// A conditional write: a failed condition is FailedPrecondition; a
// deadline reached while the cluster could not say is the context's error,
// carrying the last answer (Unavailable).
func ExampleError_write() {
	cl, err := client.New([]string{"127.0.0.1:7400"}, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = cl.Write(ctx, "friends/alice", []*syncv1.RecordOp{client.Put("bob", []byte("best friend"))},
		client.WriteOptions{Conditions: []*syncv1.RecordCondition{client.IfVersion("bob", 0)}, IdempotencyKey: "add-bob-1"})
	var e *client.Error
	switch {
	case err == nil:
		fmt.Println("written")
	case errors.Is(err, client.ErrFailedPrecondition):
		fmt.Println("bob is there already; read and decide")
	case errors.Is(err, context.DeadlineExceeded) && errors.Is(err, client.ErrUnavailable):
		fmt.Println("no answer in time: retry with the same idempotency key")
	case errors.As(err, &e):
		fmt.Println("refused:", e.Code(), e.GRPCStatus().Message())
	default:
		log.Fatal(err)
	}
}
