// Package auth decides who may call what on a node's gRPC port. Callers are
// identified by a bearer token (from a token file, stored hashed), by a
// client certificate (role in its OU), or as a peer (a connection that
// passed peer mutual TLS, see internal/certs). Each method needs a level of
// access; a role grants levels, and a peer is granted all of them.
package auth

import "strings"

// Role is what a token or client certificate is allowed to do.
type Role string

const (
	// RoleReader reads and subscribes.
	RoleReader Role = "reader"
	// RoleApp is an app server: the Sync, Records and Devices APIs.
	RoleApp Role = "app"
	// RoleAdmin is an operator: the Admin API (syncctl's cluster
	// commands), and everything an app may do.
	RoleAdmin Role = "admin"
	// rolePeer is another node of the cluster; never in a token file.
	rolePeer Role = "peer"
)

// ParseRole reads a role of a token file or certificate.
func ParseRole(s string) (Role, bool) {
	switch r := Role(strings.ToLower(strings.TrimSpace(s))); r {
	case RoleReader, RoleApp, RoleAdmin:
		return r, true
	}
	return "", false
}

// access is what a method needs.
type access int

const (
	// open: anyone, even unauthenticated (health checks of load balancers
	// and orchestrators).
	open access = iota
	// route: any authenticated caller (the shard map every client fetches).
	route
	read
	write
	admin
	// peer: other nodes only (fan-out, moves, joins).
	peerOnly
)

func (a access) String() string {
	return [...]string{"open", "any role", "reader, app or admin", "app or admin", "admin", "a peer node"}[a]
}

// grants reports whether the role may make a call that needs a.
func (r Role) grants(a access) bool {
	switch r {
	case rolePeer:
		return true
	case RoleAdmin:
		return a <= admin
	case RoleApp:
		return a <= write
	case RoleReader:
		return a <= read
	}
	return a == open
}

// methods is what each method of the node's services needs. A method not
// listed (a service added later and forgotten here) needs a peer node, so it is
// closed to clients until someone decides otherwise; TestEveryMethodHasAPolicy
// keeps the table complete.
var methods = map[string]access{
	"/grpc.health.v1.Health/Check": open,
	"/grpc.health.v1.Health/Watch": open,
	"/grpc.health.v1.Health/List":  open,

	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      route,
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": route,

	"/syncstore.v1.Sync/Append":    write,
	"/syncstore.v1.Sync/Send":      write,
	"/syncstore.v1.Sync/Pull":      read,
	"/syncstore.v1.Sync/Head":      read,
	"/syncstore.v1.Sync/History":   read,
	"/syncstore.v1.Sync/Subscribe": read,

	"/syncstore.v1.Records/Write":    write,
	"/syncstore.v1.Records/Get":      read,
	"/syncstore.v1.Records/Sync":     read,
	"/syncstore.v1.Records/SyncMany": read,

	"/syncstore.v1.Devices/Login":           write,
	"/syncstore.v1.Devices/Logout":          write,
	"/syncstore.v1.Devices/Ack":             write,
	"/syncstore.v1.Devices/MarkRead":        write,
	"/syncstore.v1.Devices/ValidateSession": read,
	"/syncstore.v1.Devices/Cursors":         read,
	"/syncstore.v1.Devices/ListDevices":     read,
	"/syncstore.v1.Devices/Conversations":   read,

	"/syncstore.v1.Admin/ShardMap":       route,
	"/syncstore.v1.Admin/NodeStatus":     admin,
	"/syncstore.v1.Admin/ClusterStatus":  admin,
	"/syncstore.v1.Admin/Digests":        admin,
	"/syncstore.v1.Admin/MoveSlots":      admin,
	"/syncstore.v1.Admin/AbortMove":      admin,
	"/syncstore.v1.Admin/ListMoves":      admin,
	"/syncstore.v1.Admin/AddGroups":      admin,
	"/syncstore.v1.Admin/SplitGroup":     admin,
	"/syncstore.v1.Admin/RebalanceSlots": admin,
	"/syncstore.v1.Admin/ListNodes":      admin,
	"/syncstore.v1.Admin/RemoveNode":     admin,
	"/syncstore.v1.Admin/TransferLeader": admin,
	"/syncstore.v1.Admin/MoveReplica":    admin,
	"/syncstore.v1.Admin/BackupGroup":    admin,
	// Rolling upgrades: raising the cluster's version, and the test
	// build's probe command (a marker record: an operator's check).
	"/syncstore.v1.Admin/FinalizeUpgrade": admin,
	"/syncstore.v1.Admin/UpgradeProbe":    admin,
	// A node joins with its peer certificate: "a node without a
	// certificate from the peer CA cannot join".
	"/syncstore.v1.Admin/Join": peerOnly,

	"/syncstore.v1.Peer/Deliver":  peerOnly,
	"/syncstore.v1.Peer/DigestAt": peerOnly,
	"/syncstore.v1.Peer/Fence":    peerOnly,
	"/syncstore.v1.Peer/Copy":     peerOnly,
	"/syncstore.v1.Peer/Move":     peerOnly,
}

func accessOf(fullMethod string) access {
	if a, ok := methods[fullMethod]; ok {
		return a
	}
	return peerOnly
}
