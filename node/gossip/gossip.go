// Package gossip runs memberlist for a node: nodes spread their addresses,
// their cluster id and the groups they host and lead, and learn who is
// alive, suspect or dead. Nodes of another cluster are not let in. It
// informs routing and status only; Raft membership never follows it.
package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"
	stdlog "log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/syncstore/syncstore/internal/logbridge"
	"github.com/syncstore/syncstore/shard"
)

// suspectProbeRounds: how many probe intervals without a successful probe
// make a peer suspect in this node's eyes.
const suspectProbeRounds = 4

// Gossip health of a node.
const (
	HealthAlive   = "alive"
	HealthSuspect = "suspect"
	HealthDead    = "dead"
	HealthLeft    = "left"
)

// Member is one node as this node's gossip sees it.
type Member struct {
	ID       string
	Health   string
	GRPCAddr string
	RaftAddr string
	Hosts    []shard.GroupID
	Leads    []shard.GroupID
	// Fenced are the groups whose replica on this node found its state
	// damaged: their leaders take it out and rebuild it.
	Fenced []shard.GroupID
	// ClusterID is the cluster the node says it is of ("" before it knows);
	// KnowsClusterIDs is false for a binary older than cluster ids (its
	// meta has no such field).
	ClusterID       string
	KnowsClusterIDs bool
}

// Gossip is a node's memberlist. memberlist hands out pointers into its
// live state, so this type never reads them outside memberlist's own
// callbacks: it keeps its own view, fed by the event and ping delegates
// (the exported memberlist methods below).
type Gossip struct {
	ml *memberlist.Memberlist
	// keyring is nil when gossip is plaintext.
	keyring *memberlist.Keyring
	log     *slog.Logger
	self    string
	host    string // the bind host
	port    int    // the bound port (memberlist picks one for port 0)
	// suspectAfter: a peer this node has not managed to probe for this long
	// is reported suspect (memberlist declares it dead later, by itself).
	suspectAfter time.Duration

	mu    sync.Mutex
	local gossipMeta
	peers map[string]*peerState
}

type peerState struct {
	addr    string // gossip address
	meta    gossipMeta
	gone    string    // HealthDead or HealthLeft once memberlist reported it gone
	lastAck time.Time // last successful probe by this node (or when it joined)
}

// gossipMeta is what a node says of itself in every alive message (its id
// is memberlist's node name).
type gossipMeta struct {
	grpcAddr string
	raftAddr string
	hosts    []shard.GroupID
	leads    []shard.GroupID
	fenced   []shard.GroupID
	// clusterID, and whether the meta had the field at all (older
	// binaries end after the hosted groups).
	clusterID      string
	knowsClusterID bool
}

// encode packs the meta as: gRPC address, Raft address (uvarint length +
// bytes each), then the fenced, the led and the hosted groups (uvarint
// count + uvarint ids each), then the cluster id (uvarint length + bytes,
// always there: older decoders ignore what follows the hosted groups).
// memberlist caps meta at limit bytes (512): lists that do not fit are
// cut, hosted groups first; the shard map says the same thing, and routing
// falls back to the map's preferred leader.
func (m gossipMeta) encode(limit int) []byte {
	id := appendString(nil, m.clusterID)
	limit -= len(id)
	b := appendString(nil, m.grpcAddr)
	b = appendString(b, m.raftAddr)
	b = appendGroups(b, fitGroups(m.fenced, limit-len(b)-2))
	leads := fitGroups(m.leads, limit-len(b)-1)
	b = appendGroups(b, leads)
	b = appendGroups(b, fitGroups(m.hosts, limit-len(b)))
	return append(b, id...)
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendGroups(b []byte, gs []shard.GroupID) []byte {
	b = binary.AppendUvarint(b, uint64(len(gs)))
	for _, g := range gs {
		b = binary.AppendUvarint(b, uint64(g))
	}
	return b
}

// fitGroups returns the longest prefix of gs whose encoding fits in room.
func fitGroups(gs []shard.GroupID, room int) []shard.GroupID {
	for n := len(gs); n >= 0; n-- {
		if len(appendGroups(nil, gs[:n])) <= room {
			return gs[:n]
		}
	}
	return nil
}

var errBadGossipMeta = errors.New("gossip: bad meta")

func decodeGossipMeta(b []byte) (gossipMeta, error) {
	var m gossipMeta
	var err error
	if m.grpcAddr, b, err = readString(b); err != nil {
		return m, err
	}
	if m.raftAddr, b, err = readString(b); err != nil {
		return m, err
	}
	if m.fenced, b, err = readGroups(b); err != nil {
		return m, err
	}
	if m.leads, b, err = readGroups(b); err != nil {
		return m, err
	}
	if m.hosts, b, err = readGroups(b); err != nil || len(b) == 0 {
		return m, err // no cluster id: an older binary
	}
	m.clusterID, _, err = readString(b)
	m.knowsClusterID = err == nil
	return m, err
}

func readString(b []byte) (string, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return "", nil, errBadGossipMeta
	}
	return string(b[k : k+int(n)]), b[k+int(n):], nil
}

func readGroups(b []byte) ([]shard.GroupID, []byte, error) {
	count, k := binary.Uvarint(b)
	if k <= 0 || count > uint64(len(b)) {
		return nil, nil, errBadGossipMeta
	}
	b = b[k:]
	var out []shard.GroupID
	for range count {
		g, k := binary.Uvarint(b)
		if k <= 0 {
			return nil, nil, errBadGossipMeta
		}
		out, b = append(out, shard.GroupID(g)), b[k:]
	}
	return out, b, nil
}

// Config is what a node gossips about itself and how.
type Config struct {
	NodeID string
	// BindAddr is "host:port" (port 0 for any), also what peers are told.
	BindAddr           string
	GRPCAddr, RaftAddr string
	ProbeInterval      time.Duration
	// Keys encrypt gossip: the first encrypts, all decrypt. Empty: none.
	Keys [][]byte
	// ClusterID is this node's cluster ("" before it knows; SetClusterID
	// sets it later). Nodes that gossip another cluster's id are ignored.
	ClusterID string
}

// Start binds memberlist to cfg.BindAddr.
func Start(cfg Config, log *slog.Logger) (*Gossip, error) {
	host, portStr, err := net.SplitHostPort(cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("gossip: address %q: %w", cfg.BindAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("gossip: port %q: %w", portStr, err)
	}
	g := &Gossip{
		log:          log,
		self:         cfg.NodeID,
		host:         host,
		local:        gossipMeta{grpcAddr: cfg.GRPCAddr, raftAddr: cfg.RaftAddr, clusterID: cfg.ClusterID, knowsClusterID: true},
		peers:        map[string]*peerState{},
		suspectAfter: suspectProbeRounds * cfg.ProbeInterval,
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeID
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = "", 0
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeInterval / 2
	mc.GossipInterval = cfg.ProbeInterval / 5
	mc.Delegate = g
	mc.Events = g
	mc.Ping = g
	// Both: a merge delegate alone would still let another cluster's
	// nodes in through their alive messages.
	mc.Alive = g
	mc.Merge = g
	if len(cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(cfg.Keys[1:], cfg.Keys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip: keys: %w", err)
		}
		mc.Keyring, g.keyring = kr, kr
		// Refuse plaintext both ways: a node without the key cannot join or
		// inject state, and cannot read the member list.
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	mc.Logger = stdlog.New(logbridge.Writer(log.With("component", "memberlist"), slog.LevelDebug), "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("gossip: on %s: %w", cfg.BindAddr, err)
	}
	g.ml, g.port = ml, mc.BindPort
	return g, nil
}

// SetKeys replaces the gossip keys: keys[0] encrypts from now on and the
// others still decrypt, so a rotation is: add the new key second on every
// node, then make it first everywhere, then drop the old one. Refused
// (nothing changes) when gossip was started without keys.
func (g *Gossip) SetKeys(keys [][]byte) error {
	kr := g.keyring
	if kr == nil {
		return errors.New("gossip: started without encryption; restart with a key to turn it on")
	}
	if len(keys) == 0 {
		return errors.New("gossip: no keys: turning encryption off needs a restart")
	}
	for _, k := range keys {
		if err := kr.AddKey(k); err != nil {
			return fmt.Errorf("gossip: add key: %w", err)
		}
	}
	if err := kr.UseKey(keys[0]); err != nil {
		return fmt.Errorf("gossip: use key: %w", err)
	}
	keep := map[string]bool{}
	for _, k := range keys {
		keep[string(k)] = true
	}
	for _, k := range kr.GetKeys() {
		if !keep[string(k)] {
			if err := kr.RemoveKey(k); err != nil {
				return fmt.Errorf("gossip: remove key: %w", err)
			}
		}
	}
	return nil
}

// Addr is the address memberlist listens on and advertises (the port
// resolved).
func (g *Gossip) Addr() string { return net.JoinHostPort(g.host, strconv.Itoa(g.port)) }

// SetGroups updates what this node says it hosts and leads and spreads it.
func (g *Gossip) SetGroups(hosts, leads, fenced []shard.GroupID) {
	g.mu.Lock()
	same := slices.Equal(g.local.leads, leads) && slices.Equal(g.local.hosts, hosts) && slices.Equal(g.local.fenced, fenced)
	g.local.hosts, g.local.leads, g.local.fenced = hosts, leads, fenced
	g.mu.Unlock()
	if same {
		return
	}
	if err := g.ml.UpdateNode(time.Second); err != nil {
		g.log.Debug("gossip update", "err", err)
	}
}

// SetClusterID sets the cluster id this node gossips (once it learns it)
// and from then on ignores nodes of another cluster.
func (g *Gossip) SetClusterID(id string) {
	g.mu.Lock()
	same := g.local.clusterID == id
	g.local.clusterID = id
	g.mu.Unlock()
	if same {
		return
	}
	if err := g.ml.UpdateNode(time.Second); err != nil {
		g.log.Debug("gossip update", "err", err)
	}
}

// foreign says why a node must be kept out: it gossips a cluster id and
// this node has another. Nodes that have none yet (joining, or of a
// cluster made before cluster ids) are let in.
func (g *Gossip) foreign(n *memberlist.Node) error {
	if n.Name == g.self {
		return nil
	}
	meta, err := decodeGossipMeta(n.Meta)
	if err != nil || meta.clusterID == "" {
		return nil
	}
	g.mu.Lock()
	own := g.local.clusterID
	g.mu.Unlock()
	if own == "" || own == meta.clusterID {
		return nil
	}
	return fmt.Errorf("gossip: node %s is of cluster %s, this node of cluster %s", n.Name, meta.clusterID, own)
}

// memberlist.AliveDelegate

// NotifyAlive ignores the alive messages of another cluster's nodes.
func (g *Gossip) NotifyAlive(n *memberlist.Node) error { return g.foreign(n) }

// memberlist.MergeDelegate

// NotifyMerge refuses a push/pull with a node whose member list holds a
// node of another cluster: the two clusters do not merge.
func (g *Gossip) NotifyMerge(peers []*memberlist.Node) error {
	for _, n := range peers {
		if err := g.foreign(n); err != nil {
			g.log.Warn("refused to merge gossip with another cluster", "err", err)
			return err
		}
	}
	return nil
}

// Join contacts the given gossip addresses of nodes not met yet, or gone.
func (g *Gossip) Join(addrs []string) {
	known := map[string]bool{}
	g.mu.Lock()
	for _, p := range g.peers {
		if p.gone == "" {
			known[p.addr] = true
		}
	}
	g.mu.Unlock()
	var todo []string
	for _, a := range addrs {
		if a != "" && !known[a] {
			todo = append(todo, a)
		}
	}
	if len(todo) == 0 {
		return
	}
	if _, err := g.ml.Join(todo); err != nil {
		g.log.Debug("gossip join", "addrs", todo, "err", err)
	}
}

// Members reports every node heard of, this one included.
func (g *Gossip) Members() []Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []Member
	for id, p := range g.peers {
		h := p.gone
		switch {
		case h != "":
		case id != g.self && time.Since(p.lastAck) > g.suspectAfter:
			h = HealthSuspect
		default:
			h = HealthAlive
		}
		out = append(out, Member{
			ID: id, Health: h, GRPCAddr: p.meta.grpcAddr, RaftAddr: p.meta.raftAddr,
			Hosts: slices.Clone(p.meta.hosts), Leads: slices.Clone(p.meta.leads), Fenced: slices.Clone(p.meta.fenced),
			ClusterID: p.meta.clusterID, KnowsClusterIDs: p.meta.knowsClusterID,
		})
	}
	slices.SortFunc(out, func(a, b Member) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// LeaderOf returns the live node that says it leads a group, if any.
func (g *Gossip) LeaderOf(group shard.GroupID) (Member, bool) {
	for _, m := range g.Members() {
		if m.Health == HealthAlive && slices.Contains(m.Leads, group) {
			return m, true
		}
	}
	return Member{}, false
}

// Close leaves the cluster and stops.
func (g *Gossip) Close() error {
	if err := g.ml.Leave(time.Second); err != nil {
		g.log.Debug("gossip leave", "err", err)
	}
	return g.ml.Shutdown()
}

// memberlist.Delegate

func (g *Gossip) NodeMeta(limit int) []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.local.encode(limit)
}
func (g *Gossip) NotifyMsg([]byte)                           {}
func (g *Gossip) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (g *Gossip) LocalState(join bool) []byte                { return nil }
func (g *Gossip) MergeRemoteState(buf []byte, join bool)     {}

// memberlist.EventDelegate

func (g *Gossip) NotifyJoin(n *memberlist.Node)   { g.seen(n, "") }
func (g *Gossip) NotifyUpdate(n *memberlist.Node) { g.seen(n, "") }
func (g *Gossip) NotifyLeave(n *memberlist.Node) {
	gone := HealthDead
	if n.State == memberlist.StateLeft {
		gone = HealthLeft
	}
	g.seen(n, gone)
}

// seen runs inside memberlist's callbacks, the only place its *Node may be
// read.
func (g *Gossip) seen(n *memberlist.Node, gone string) {
	meta, err := decodeGossipMeta(n.Meta)
	addr := n.Address()
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.peers[n.Name]
	if p == nil || (p.gone != "" && gone == "") {
		p = &peerState{lastAck: time.Now()} // new, or back after being gone
		g.peers[n.Name] = p
	}
	if err == nil {
		p.meta = meta
	}
	p.addr, p.gone = addr, gone
}

// memberlist.PingDelegate

func (g *Gossip) AckPayload() []byte { return nil }
func (g *Gossip) NotifyPingComplete(other *memberlist.Node, _ time.Duration, _ []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if p := g.peers[other.Name]; p != nil {
		p.lastAck = time.Now()
	}
}
