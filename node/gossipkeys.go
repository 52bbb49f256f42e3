package node

// SetGossipKeys replaces the gossip encryption keys (a SIGHUP reload):
// keys[0] encrypts, all decrypt.
func (n *Node) SetGossipKeys(keys [][]byte) error { return n.gossip.SetKeys(keys) }
