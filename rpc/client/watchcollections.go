package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/syncstore/syncstore/rpc/syncv1"
)

// CollectionUpdate is one step of a watched collection: the changes after
// FromVersion up to Version (whole writes), to apply on a copy at
// FromVersion. Replace: the update is the whole collection at Version (a
// full read after RESET); drop what was held first.
type CollectionUpdate struct {
	Collection  string
	FromVersion uint64
	Version     uint64
	Changes     []*syncv1.Record
	Digest      string
	Replace     bool
}

// watchPage is the Sync page size of a watch catching up.
const watchPage = 500

// WatchCollection follows one collection from the version the caller
// holds, calling fn with every update in order, until ctx ends or fn
// fails. Push is the fast path: a Subscribe stream to the leader of the
// collection's group, whose pages are applied only when they start at the
// version held. Pull is the guarantee: whenever the stream cannot go on
// (dropped, a jump, a lost stream), the watch Syncs from the version held
// (a full read after RESET) and subscribes again. It returns fn's error, the
// context's, or an answer that retrying would repeat (InvalidArgument,
// PermissionDenied, Unauthenticated, ResourceExhausted, Unimplemented), and
// with FailFast, ErrUnreachable.
func (c *Client) WatchCollection(ctx context.Context, collection string, since uint64, fn func(CollectionUpdate) error) error {
	version := since
	backoff := c.opts.MinBackoff
	for ctx.Err() == nil {
		before := version
		var err error
		if version, err = c.catchUp(ctx, collection, version, fn); err == nil {
			version, err = c.follow(ctx, collection, version, fn)
		}
		if version != before {
			backoff = c.opts.MinBackoff // it made progress: the next break is a new one
		}
		var fnErr callbackError
		if errors.As(err, &fnErr) {
			return fnErr.err
		}
		if fatal(err) || c.failedFast(err) { // a caller error (a bad id, a refused credential) would be repeated
			return typed(err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, c.opts.MaxBackoff)
	}
	return ctx.Err()
}

type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

// catchUp Syncs the collection from version to its head, reading it whole
// after RESET, and returns the version reached.
func (c *Client) catchUp(ctx context.Context, coll string, version uint64, fn func(CollectionUpdate) error) (uint64, error) {
	for {
		resp, err := c.SyncRecords(ctx, coll, version, watchPage, Linearizable)
		if err != nil {
			return version, err
		}
		switch resp.GetStatus() {
		case syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_RESET:
			whole, err := c.readWhole(ctx, coll, fn)
			if err != nil {
				return version, err // the caller still holds version: the next try starts there
			}
			version = whole
			continue
		case syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_AHEAD:
			return version, fmt.Errorf("client: %s: the server is behind version %d", coll, version)
		case syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_UP_TO_DATE:
			return version, nil
		}
		u := CollectionUpdate{Collection: coll, FromVersion: version, Version: resp.GetVersion(), Changes: resp.GetChanges(), Digest: resp.GetDigest()}
		if err := fn(u); err != nil {
			return version, callbackError{err}
		}
		version = resp.GetVersion()
		if resp.GetStatus() != syncv1.RecordSyncStatus_RECORD_SYNC_STATUS_MORE {
			return version, nil
		}
	}
}

// readWhole reads every page of the collection and hands it over as one
// Replace update at the version the read began at.
func (c *Client) readWhole(ctx context.Context, coll string, fn func(CollectionUpdate) error) (uint64, error) {
	u := CollectionUpdate{Collection: coll, Replace: true}
	after := ""
	for first := true; ; first = false {
		page, err := c.Get(ctx, coll, nil, after, watchPage, Linearizable)
		if err != nil {
			return 0, err
		}
		if first {
			u.Version, u.Digest = page.GetVersion(), page.GetDigest()
		}
		u.Changes = append(u.Changes, page.GetRecords()...)
		if !page.GetMore() {
			break
		}
		after = page.GetNextAfterKey()
	}
	if err := fn(u); err != nil {
		return 0, callbackError{err}
	}
	return u.Version, nil
}

// follow subscribes at the leader of the collection's group and applies
// pushed pages while they start at the version held. It returns when the
// stream cannot go on (the caller catches up and calls it again).
func (c *Client) follow(ctx context.Context, coll string, version uint64, fn func(CollectionUpdate) error) (uint64, error) {
	_, _, conn, err := c.target(coll)
	if err != nil {
		return version, err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := syncv1.NewSyncClient(conn).Subscribe(sctx)
	if err != nil {
		return version, err
	}
	if err := stream.Send(&syncv1.SubscribeRequest{AddCollections: []*syncv1.CollectionFrom{{Collection: proto.String(coll), SinceVersion: proto.Uint64(version)}}}); err != nil {
		return version, err
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			return version, err
		}
		switch e := ev.GetEvent().(type) {
		case *syncv1.SubscribeEvent_Collection:
			ch := e.Collection
			if ch.GetCollection() != coll || ch.GetFromVersion() != version {
				return version, fmt.Errorf("client: %s: a pushed page from %d, holding %d", coll, ch.GetFromVersion(), version)
			}
			if err := fn(CollectionUpdate{Collection: coll, FromVersion: version, Version: ch.GetVersion(), Changes: ch.GetChanges(), Digest: ch.GetDigest()}); err != nil {
				return version, callbackError{err}
			}
			version = ch.GetVersion()
		case *syncv1.SubscribeEvent_CollectionDropped:
			if e.CollectionDropped.GetReason() == "moved" {
				c.forgetRoutes()
			}
			return version, fmt.Errorf("client: %s: the stream dropped it (%s)", coll, e.CollectionDropped.GetReason())
		}
	}
}
