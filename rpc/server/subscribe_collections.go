package server

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstore/syncstore/fsm"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/syncv1"
	"github.com/syncstore/syncstore/shard"
)

// checkCollections validates a request's collection changes and counts
// those it adds and removes.
func (st *subStream) checkCollections(req *syncv1.SubscribeRequest) (adding, removing int, err error) {
	for i, a := range req.GetAddCollections() {
		if err := fsm.ValidateCollectionID(a.GetCollection()); err != nil {
			return 0, 0, status.Errorf(codes.InvalidArgument, "add collection %d: %v", i, err)
		}
		if _, ok := st.ccursor[a.GetCollection()]; !ok {
			adding++
		}
	}
	for i, c := range req.GetRemoveCollections() {
		if err := fsm.ValidateCollectionID(c); err != nil {
			return 0, 0, status.Errorf(codes.InvalidArgument, "remove collection %d: %v", i, err)
		}
		if _, ok := st.ccursor[c]; ok {
			removing++
		}
	}
	return adding, removing, nil
}

// applyCollections follows and unfollows collections (checked first).
func (st *subStream) applyCollections(req *syncv1.SubscribeRequest) {
	for _, c := range req.GetRemoveCollections() {
		st.forgetCollection(c)
	}
	for _, a := range req.GetAddCollections() {
		c := a.GetCollection()
		if group, leader, ok := st.s.node.Serving(c); !ok {
			st.dropCollection(c, "moved", group, leader)
			continue
		}
		st.ccursor[c] = a.GetSinceVersion()
		st.cpend[c] = true
		st.w.Add(c)
	}
}

// produceCollections queues, per pending collection, a page of its changes
// past the cursor (whole writes, as Sync pages them) while the queue has
// room.
func (st *subStream) produceCollections() {
	n := st.s.node
	for c := range st.cpend {
		free := st.q.free()
		if free == 0 {
			return
		}
		after := st.ccursor[c]
		page, err := n.SyncRecords(st.ctx, c, after, min(subscribePage, free), node.Stale)
		if err != nil {
			group, leader, _ := n.Serving(c)
			st.dropCollection(c, "moved", group, leader)
			continue
		}
		switch page.Status {
		case fsm.SyncUpToDate, fsm.SyncAhead:
			delete(st.cpend, c) // ahead: this replica lags; the watcher marks it again
		case fsm.SyncReset:
			st.dropCollection(c, "reset", 0, "")
		default:
			if page.Version-after > uint64(st.lim.BufferEvents) {
				st.dropCollection(c, "behind", 0, "")
				continue
			}
			if st.notifyOnly {
				st.q.push(&syncv1.SubscribeEvent{Event: &syncv1.SubscribeEvent_CollectionNotification{CollectionNotification: &syncv1.CollectionNotification{
					Collection: c, Version: page.Version,
				}}}, 0)
				st.ccursor[c] = page.Version
				delete(st.cpend, c)
				continue
			}
			ev := &syncv1.CollectionChanges{Collection: c, FromVersion: after, Version: page.PageVersion, Digest: page.Digest}
			size := 0
			for _, r := range page.Changes {
				ev.Changes = append(ev.Changes, recordProto(r))
				size += len(r.Value)
			}
			st.q.push(&syncv1.SubscribeEvent{Event: &syncv1.SubscribeEvent_Collection{Collection: ev}}, size)
			st.ccursor[c] = page.PageVersion
			if page.Status == fsm.SyncOK {
				delete(st.cpend, c)
			}
		}
	}
}

func (st *subStream) dropCollection(c, reason string, group shard.GroupID, leaderAddr string) {
	st.forgetCollection(c)
	st.q.pushControl(&syncv1.SubscribeEvent{Event: &syncv1.SubscribeEvent_CollectionDropped{CollectionDropped: &syncv1.CollectionDropped{
		Collection: c, Reason: reason, GroupId: uint64(group), LeaderAddr: leaderAddr,
	}}})
}

func (st *subStream) forgetCollection(c string) {
	delete(st.ccursor, c)
	delete(st.cpend, c)
	if _, tl := st.cursor[c]; !tl { // a timeline of the same name still needs the hub
		st.w.Remove(c)
	}
}
