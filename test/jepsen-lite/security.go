package main

import (
	"fmt"
	"path/filepath"

	"github.com/syncstore/syncstore/internal/devcerts"
	"github.com/syncstore/syncstore/rpc/client"
)

// runSecurity is a run's TLS, tokens and gossip key: a run is checked as
// production runs, with peer mutual TLS, client TLS, token auth and
// encrypted gossip (--insecure runs plaintext instead).
type runSecurity struct {
	insecure bool
	dir      string
	bundle   *devcerts.Bundle
}

// newRunSecurity writes a CA, node certificates naming every host's IP,
// tokens and a gossip key into dir.
func newRunSecurity(dir string, hosts []*host, insecure bool) (*runSecurity, error) {
	s := &runSecurity{insecure: insecure, dir: dir}
	if insecure {
		return s, nil
	}
	var names, ips []string
	for _, h := range hosts {
		names, ips = append(names, h.id), append(ips, h.ip)
	}
	b, err := devcerts.New(devcerts.Options{Nodes: names, Hosts: ips, CAName: "jepsen-lite CA"})
	if err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	if _, err := b.Write(dir, true); err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	s.bundle = b
	return s, nil
}

// nodeArgs are syncd's security flags for node id.
func (s *runSecurity) nodeArgs(id string) []string {
	if s.insecure {
		return []string{"--insecure"}
	}
	f := func(name string) string { return filepath.Join(s.dir, name) }
	return []string{
		"--tls-cert", f(id + ".pem"), "--tls-key", f(id + "-key.pem"),
		"--peer-cert", f(id + ".pem"), "--peer-key", f(id + "-key.pem"), "--peer-ca", f("ca.pem"),
		"--client-ca", f("ca.pem"), "--token-file", f("tokens.txt"),
		"--gossip-key", s.bundle.GossipKeyBase64(),
	}
}

// options adds TLS and role's token to o.
func (s *runSecurity) options(role string, o client.Options) (client.Options, error) {
	if s.insecure {
		return o, nil
	}
	cfg, err := client.LoadTLS(filepath.Join(s.dir, "ca.pem"), "", "", "")
	if err != nil {
		return o, err
	}
	o.TLS, o.Token = cfg, s.bundle.Token(role)
	return o, nil
}
