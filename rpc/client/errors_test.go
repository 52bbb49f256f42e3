package client

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/rpc/syncv1"
)

// TestErrorsMatchTheSentinelOfTheirCode: whatever a node answers, the
// error matches its code's sentinel and no other, and status.Code and
// status.FromError still read the status, message and details.
func TestErrorsMatchTheSentinelOfTheirCode(t *testing.T) {
	for code, sentinel := range sentinels {
		detail := &syncv1.ConditionFailed{}
		answer, err := status.New(code, "the answer").WithDetails(detail)
		if err != nil {
			t.Fatal(err)
		}
		addr := serve(t, &fakeSync{answer: func(int) (*syncv1.AppendResponse, error) { return nil, answer.Err() }})
		c := newClient(t, addr)
		// Retried codes are retried until the deadline; the error carries
		// the last answer.
		err = appendWithin(c, 100*time.Millisecond)
		if !errors.Is(err, sentinel) || status.Code(err) != code {
			t.Errorf("%v: got %v (code %v); want it to match %v", code, err, status.Code(err), sentinel)
		}
		for other, s := range sentinels {
			if other != code && errors.Is(err, s) && !(other == codes.DeadlineExceeded && retryable(code)) {
				t.Errorf("%v: the error matches %v too", code, s)
			}
		}
		st, ok := status.FromError(err)
		var e *Error
		if !ok || len(st.Details()) != 1 || !errors.As(err, &e) || e.Code() != code || e.GRPCStatus().Message() != "the answer" {
			t.Errorf("%v: status %v (ok %t), *Error %v; want the status with its detail", code, st, ok, e)
		}
	}
}

// denyAll answers every call of every service with PermissionDenied.
func denyAll(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deny := status.Error(codes.PermissionDenied, "token \"ro1\" has role reader")
	s := grpc.NewServer(
		grpc.UnaryInterceptor(func(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) { return nil, deny }),
		grpc.StreamInterceptor(func(any, grpc.ServerStream, *grpc.StreamServerInfo, grpc.StreamHandler) error { return deny }),
	)
	syncv1.RegisterSyncServer(s, syncv1.UnimplementedSyncServer{})
	syncv1.RegisterRecordsServer(s, syncv1.UnimplementedRecordsServer{})
	syncv1.RegisterDevicesServer(s, syncv1.UnimplementedDevicesServer{})
	syncv1.RegisterAdminServer(s, syncv1.UnimplementedAdminServer{})
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// TestEveryMethodReturnsTypedErrors: each Client method's error matches
// the sentinel of the node's answer.
func TestEveryMethodReturnsTypedErrors(t *testing.T) {
	c := newClient(t, denyAll(t))
	calls := map[string]func(ctx context.Context) error{
		"Append": func(ctx context.Context) error { _, err := c.Append(ctx, "t", nil, AppendOptions{}); return err },
		"Pull":   func(ctx context.Context) error { _, err := c.Pull(ctx, "t", 0, 10, Linearizable); return err },
		"Head":   func(ctx context.Context) error { _, err := c.Head(ctx, "t", Stale); return err },
		"Send": func(ctx context.Context) error {
			_, err := c.Send(ctx, "room", "bob", []string{"alice"}, nil, AppendOptions{})
			return err
		},
		"History": func(ctx context.Context) error { _, err := c.History(ctx, "room", 0, 10, Linearizable); return err },
		"Write": func(ctx context.Context) error {
			_, err := c.Write(ctx, "c", []*syncv1.RecordOp{Put("k", nil)}, WriteOptions{})
			return err
		},
		"Get":         func(ctx context.Context) error { _, err := c.Get(ctx, "c", nil, "", 10, Linearizable); return err },
		"SyncRecords": func(ctx context.Context) error { _, err := c.SyncRecords(ctx, "c", 0, 10, Linearizable); return err },
		"SyncMany":    func(ctx context.Context) error { _, err := c.SyncMany(ctx, nil); return err },
		"Admin": func(ctx context.Context) error {
			return c.Admin(ctx, func(ctx context.Context, a syncv1.AdminClient) error {
				_, err := a.ClusterStatus(ctx, &syncv1.ClusterStatusRequest{})
				return err
			})
		},
		"Login":  func(ctx context.Context) error { _, err := c.Login(ctx, "u", "d", "phone", "s", nil); return err },
		"Logout": func(ctx context.Context) error { _, err := c.Logout(ctx, "u", "s"); return err },
		"ValidateSession": func(ctx context.Context) error {
			_, err := c.ValidateSession(ctx, "u", "s", Linearizable)
			return err
		},
		"Ack":           func(ctx context.Context) error { _, err := c.Ack(ctx, "u", "d", "u", 1); return err },
		"Cursors":       func(ctx context.Context) error { _, err := c.Cursors(ctx, "u", "d", Linearizable); return err },
		"ListDevices":   func(ctx context.Context) error { _, err := c.ListDevices(ctx, "u", Linearizable); return err },
		"MarkRead":      func(ctx context.Context) error { _, err := c.MarkRead(ctx, "u", "room", 1); return err },
		"Conversations": func(ctx context.Context) error { _, err := c.Conversations(ctx, "u", "", 10, Linearizable); return err },
		"WatchCollection": func(ctx context.Context) error {
			return c.WatchCollection(ctx, "c", 0, func(CollectionUpdate) error { return nil })
		},
		"Subscribe": func(ctx context.Context) error {
			sub, err := c.Subscribe(ctx, SubscribeOptions{})
			if err != nil {
				return err
			}
			defer sub.Close()
			if err := sub.Add("t", 0); err != nil {
				return err
			}
			for range sub.Events() {
			}
			return sub.Err()
		},
	}
	for name, call := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := call(ctx)
		cancel()
		if !errors.Is(err, ErrPermissionDenied) || status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: got %v; want an error matching ErrPermissionDenied", name, err)
		}
	}
}

func TestClientRefusalsAreInvalidArgument(t *testing.T) {
	_, err := New(nil, Options{})
	if !errors.Is(err, ErrNoAddresses) || !errors.Is(err, ErrInvalidArgument) || status.Code(err) != codes.InvalidArgument {
		t.Errorf("New without addresses: %v", err)
	}
	c := newClient(t, "127.0.0.1:1")
	sub, err := c.Subscribe(context.Background(), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.Add("", 0); !errors.Is(err, ErrInvalidTimeline) || !errors.Is(err, ErrInvalidArgument) || status.Code(err) != codes.InvalidArgument {
		t.Errorf("Add of an empty id: %v", err)
	}
}
