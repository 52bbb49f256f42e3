package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// Node is the TLS material of one node.
type Node struct {
	// Server is the client gRPC port's certificate (--tls-cert, --tls-key)
	// and the CA of client certificates it accepts (--client-ca); nil when
	// the port serves the peer certificate to clients too.
	Server *Source
	// Peer is the certificate and CA of mutual TLS between nodes.
	Peer *Source
}

// LoadNode reads a node's files: nil and no error when none is named. Peer
// TLS needs all three files. The client port is shared with peers, so it
// cannot serve TLS while peers talk plaintext: server files need peer files.
func LoadNode(server, peer Files) (*Node, error) {
	if server.Empty() && peer.Empty() {
		return nil, nil
	}
	if peer.Cert == "" || peer.Key == "" || peer.CA == "" {
		if peer.Empty() {
			return nil, errors.New("certs: the gRPC port is shared by clients and peers, so TLS on it needs peer TLS too (--peer-cert, --peer-key, --peer-ca)")
		}
		return nil, fmt.Errorf("certs: peer TLS needs --peer-cert, --peer-key and --peer-ca (got cert %q, key %q, CA %q)", peer.Cert, peer.Key, peer.CA)
	}
	if server.CA != "" && server.Cert == "" {
		return nil, errors.New("certs: --client-ca needs --tls-cert and --tls-key")
	}
	n := &Node{}
	var err error
	if n.Peer, err = Load(peer); err != nil {
		return nil, err
	}
	if !server.Empty() {
		if n.Server, err = Load(server); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// Reload reads every file again; each source keeps its old material when
// its files fail to load.
func (n *Node) Reload() error {
	if n == nil {
		return nil
	}
	errs := []error{n.Peer.Reload()}
	if n.Server != nil {
		errs = append(errs, n.Server.Reload())
	}
	return errors.Join(errs...)
}

// ClientCerts reports whether the gRPC port verifies client certificates.
func (n *Node) ClientCerts() bool { return n != nil && n.Server != nil && n.Server.files.CA != "" }

// GRPCServer is the TLS config of the gRPC port: peers (server name
// PeerServerName) get the peer certificate and must present one from the
// peer CA; clients get the server certificate and, with --client-ca, may
// present one from it.
func (n *Node) GRPCServer() *tls.Config {
	peer := n.peerServer([]string{"h2"})
	client := n.clientServer()
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2"},
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if hello.ServerName == PeerServerName {
				return peer, nil
			}
			return client, nil
		},
	}
}

// PeerServer is the TLS config of the Raft port: peers only.
func (n *Node) PeerServer() *tls.Config { return n.peerServer(nil) }

func (n *Node) peerServer(protos []string) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     protos,
		GetCertificate: n.Peer.getCertificate,
		// Verified below against the current pool, which Reload replaces.
		ClientAuth:             tls.RequireAnyClientCert,
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return n.Peer.verifyPeer(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
		},
	}
}

func (n *Node) clientServer() *tls.Config {
	src := n.Server
	if src == nil {
		src = n.Peer // one certificate for both: clients trust the peer CA
	}
	cfg := &tls.Config{
		MinVersion:             tls.VersionTLS12,
		NextProtos:             []string{"h2"},
		GetCertificate:         src.getCertificate,
		SessionTicketsDisabled: true,
	}
	if n.ClientCerts() {
		cfg.ClientAuth = tls.RequestClientCert
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil // a token caller
			}
			return n.Server.verifyChain(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
		}
	}
	return cfg
}

// PeerClient is the TLS config of connections to other nodes, Raft and
// gRPC: the peer certificate, server name PeerServerName, and the other
// node verified by the peer CA.
func (n *Node) PeerClient() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: PeerServerName,
		// The chain is verified below against the peer CA; the host name is
		// not, as peers are identified by the CA (see the package comment).
		InsecureSkipVerify:   true,
		GetClientCertificate: n.Peer.getClientCertificate,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return n.Peer.verifyPeer(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
		},
	}
}

// IsPeer reports whether a TLS connection to the gRPC port is a verified
// peer: only peer handshakes use PeerServerName, and they require a peer
// certificate the peer CA verified.
func IsPeer(cs tls.ConnectionState) bool {
	return cs.ServerName == PeerServerName && len(cs.PeerCertificates) > 0
}
