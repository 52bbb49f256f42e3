package main

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/syncstore/syncstore/internal/certs"
	"github.com/syncstore/syncstore/node"
	"github.com/syncstore/syncstore/rpc/auth"
)

// securityFlags are the flags of TLS, authentication and gossip encryption.
type securityFlags struct {
	tlsCert, tlsKey, clientCA string
	peerCert, peerKey, peerCA string
	gossipKey, gossipKeyFile  string
	tokenFile                 string
	insecure                  bool
}

// secretFlags hold secrets: --print-config shows them redacted.
var secretFlags = map[string]bool{"gossip-key": true}

func (f *securityFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate the gRPC port serves to clients (needs the peer TLS flags too: peers share the port)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM key of --tls-cert")
	fs.StringVar(&f.clientCA, "client-ca", "", "PEM CA bundle of client certificates the gRPC port accepts as identities (name in the CN, role in the OU: app, reader or admin)")
	fs.StringVar(&f.peerCert, "peer-cert", "", "PEM certificate this node presents to other nodes (Raft port, Peer and Admin calls); with no --tls-cert, also served to clients")
	fs.StringVar(&f.peerKey, "peer-key", "", "PEM key of --peer-cert")
	fs.StringVar(&f.peerCA, "peer-ca", "", "PEM CA bundle of peer certificates: a node without a certificate from it cannot join, replicate or deliver")
	fs.StringVar(&f.gossipKey, "gossip-key", "", "base64 AES keys (16, 24 or 32 bytes) encrypting gossip, comma-separated: the first encrypts, all decrypt")
	fs.StringVar(&f.gossipKeyFile, "gossip-key-file", "", "file of gossip keys, one base64 key per line, first encrypts; read again on SIGHUP (rotation)")
	fs.StringVar(&f.tokenFile, "token-file", "", `bearer tokens, one per line "NAME ROLE SHA256HEX" (syncctl token new); read again on SIGHUP`)
	fs.BoolVar(&f.insecure, "insecure", false, "allow listening on non-loopback addresses without TLS and authentication (anyone who reaches the ports can do anything)")
}

// security is what the flags load.
type security struct {
	flags      securityFlags
	certs      *certs.Node // nil: plaintext
	tokens     *auth.Tokens
	gossipKeys [][]byte
}

func (f securityFlags) load() (*security, error) {
	s := &security{flags: f}
	var err error
	s.certs, err = certs.LoadNode(
		certs.Files{Cert: f.tlsCert, Key: f.tlsKey, CA: f.clientCA},
		certs.Files{Cert: f.peerCert, Key: f.peerKey, CA: f.peerCA})
	if err != nil {
		return nil, usageError{err}
	}
	if f.tokenFile != "" {
		if s.tokens, err = auth.LoadTokens(f.tokenFile); err != nil {
			return nil, usageError{err}
		}
	}
	if s.authenticates() && s.certs == nil {
		return nil, usageError{errors.New("--token-file and --client-ca need TLS (--peer-cert, --peer-key, --peer-ca, and optionally --tls-cert, --tls-key): a token sent in plaintext can be read off the wire")}
	}
	if f.gossipKey != "" && f.gossipKeyFile != "" {
		return nil, usageError{errors.New("--gossip-key and --gossip-key-file: give one")}
	}
	if s.gossipKeys, err = s.readGossipKeys(); err != nil {
		return nil, usageError{err}
	}
	return s, nil
}

func (s *security) authenticates() bool { return s.tokens != nil || s.certs.ClientCerts() }

// secure reports whether the node runs with TLS and client authentication.
func (s *security) secure() bool { return s.certs != nil && s.authenticates() }

func (s *security) authorizer() *auth.Authorizer {
	return auth.New(auth.Config{Tokens: s.tokens, ClientCerts: s.certs.ClientCerts(), PeerTLS: s.certs != nil})
}

func (s *security) peerTLS() *node.PeerTLS {
	if s.certs == nil {
		return nil
	}
	return &node.PeerTLS{Server: s.certs.PeerServer(), Client: s.certs.PeerClient()}
}

func (s *security) readGossipKeys() ([][]byte, error) {
	text, source := s.flags.gossipKey, "--gossip-key"
	if s.flags.gossipKeyFile != "" {
		b, err := os.ReadFile(s.flags.gossipKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--gossip-key-file: %w", err)
		}
		text, source = strings.ReplaceAll(string(b), "\n", ","), s.flags.gossipKeyFile
	}
	return parseGossipKeys(text, source)
}

func parseGossipKeys(text, source string) ([][]byte, error) {
	var keys [][]byte
	for i, field := range strings.Split(text, ",") {
		field = strings.TrimSpace(field)
		if field == "" || strings.HasPrefix(field, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(field)
		if err != nil {
			return nil, fmt.Errorf("%s: key %d is not base64: %w", source, i+1, err)
		}
		if l := len(k); l != 16 && l != 24 && l != 32 {
			return nil, fmt.Errorf("%s: key %d has %d bytes: want 16, 24 or 32 (AES-128, -192, -256)", source, i+1, l)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// exposure refuses to listen beyond loopback without TLS and
// authentication, unless --insecure says the operator means it.
func (s *security) exposure(listens map[string]string) error {
	var exposed []string
	for _, name := range []string{"grpc-addr", "raft-addr", "gossip-addr", "debug-addr"} {
		if addr := listens[name]; addr != "" && !loopback(addr) {
			exposed = append(exposed, fmt.Sprintf("--%s %s", name, addr))
		}
	}
	if len(exposed) == 0 || s.secure() || s.flags.insecure {
		return nil
	}
	var missing []string
	if s.certs == nil {
		missing = append(missing, "TLS (--peer-cert, --peer-key, --peer-ca; --tls-cert, --tls-key)")
	}
	if !s.authenticates() {
		missing = append(missing, "authentication (--token-file or --client-ca)")
	}
	return usageError{fmt.Errorf("refusing to listen on %s without %s: anyone who reaches those ports could read and write everything and join the cluster; configure them (scripts/dev-certs.sh makes a set for trying), or pass --insecure on a network you trust",
		strings.Join(exposed, ", "), strings.Join(missing, " and "))}
}

// loopback reports whether a listen address is reachable from this host
// only. An empty host (":7400") listens on every interface.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// reload reads certificates, tokens and the gossip key file again (SIGHUP).
// Each part keeps what it had when its files fail; the errors are logged.
func (s *security) reload(nd *node.Node, log *slog.Logger) {
	if s.certs != nil {
		if err := s.certs.Reload(); err != nil {
			log.Error("reload certificates: kept the previous ones", "err", err)
		} else {
			log.Info("reloaded certificates")
		}
	}
	if s.tokens != nil {
		if err := s.tokens.Reload(); err != nil {
			log.Error("reload tokens: kept the previous ones", "err", err)
		} else {
			log.Info("reloaded tokens", "file", s.tokens.Path(), "tokens", s.tokens.Len())
		}
	}
	if s.flags.gossipKeyFile != "" {
		keys, err := s.readGossipKeys()
		if err == nil {
			err = nd.SetGossipKeys(keys)
		}
		if err != nil {
			log.Error("reload gossip keys: kept the previous ones", "err", err)
		} else {
			log.Info("reloaded gossip keys", "keys", len(keys))
		}
	}
}
