// Package certs holds a node's TLS material: certificates and CA pools read
// from files, replaced in place by Reload (SIGHUP) so that new connections
// use the new files while established ones go on, and the tls.Configs built
// on them for the three kinds of connection a node makes or takes:
//
//   - the client gRPC port, which app servers and operators dial with the
//     node's server certificate (--tls-cert), optionally presenting a client
//     certificate from --client-ca;
//   - peer connections (Raft port, Peer and Admin gRPC between nodes), mutual
//     TLS with certificates from the peer CA (--peer-ca). Peers are
//     identified by that CA alone, not by host name: node addresses change
//     (containers, re-IPs) and the CA is the cluster's membership credential.
//
// Peers share the client gRPC port. A peer dialing it sends PeerServerName
// as its TLS server name; the port then answers with the peer certificate and
// requires a peer certificate back, so a connection with that name is a
// verified peer and any other is a client.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync/atomic"
)

// PeerServerName is the TLS server name (SNI) of peer connections.
const PeerServerName = "syncstore-peer"

// ErrNoCertificates: a CA file holds no PEM certificate.
var ErrNoCertificates = errors.New("no PEM certificates in file")

// Files names a certificate, its key and a CA bundle; any may be empty.
type Files struct {
	Cert, Key, CA string
}

// Empty reports whether no file is named.
func (f Files) Empty() bool { return f.Cert == "" && f.Key == "" && f.CA == "" }

// Source is one certificate with its key and one CA pool, read from Files.
// Its methods are safe for concurrent use with Reload.
type Source struct {
	files Files
	cert  atomic.Pointer[tls.Certificate]
	pool  atomic.Pointer[x509.CertPool]
}

// Load reads the files. Cert and Key come together or not at all.
func Load(f Files) (*Source, error) {
	if (f.Cert == "") != (f.Key == "") {
		return nil, fmt.Errorf("certs: a certificate needs its key and a key its certificate (cert %q, key %q)", f.Cert, f.Key)
	}
	s := &Source{files: f}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Files returns the files the source reads.
func (s *Source) Files() Files { return s.files }

// Reload reads the files again. On any error nothing changes: a half-written
// or mismatched pair never replaces a working one.
func (s *Source) Reload() error {
	var cert *tls.Certificate
	if s.files.Cert != "" {
		c, err := tls.LoadX509KeyPair(s.files.Cert, s.files.Key)
		if err != nil {
			return fmt.Errorf("certs: load %s and %s: %w", s.files.Cert, s.files.Key, err)
		}
		if c.Leaf == nil && len(c.Certificate) > 0 {
			if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
				return fmt.Errorf("certs: parse %s: %w", s.files.Cert, err)
			}
		}
		cert = &c
	}
	var pool *x509.CertPool
	if s.files.CA != "" {
		pem, err := os.ReadFile(s.files.CA)
		if err != nil {
			return fmt.Errorf("certs: read CA: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("certs: CA %s: %w", s.files.CA, ErrNoCertificates)
		}
	}
	if cert != nil {
		s.cert.Store(cert)
	}
	if pool != nil {
		s.pool.Store(pool)
	}
	return nil
}

// Certificate is the current certificate, nil when none is configured.
func (s *Source) Certificate() *tls.Certificate {
	if s == nil {
		return nil
	}
	return s.cert.Load()
}

// Pool is the current CA pool, nil when none is configured.
func (s *Source) Pool() *x509.CertPool {
	if s == nil {
		return nil
	}
	return s.pool.Load()
}

// getCertificate serves the current certificate to a handshake.
func (s *Source) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := s.Certificate(); c != nil {
		return c, nil
	}
	return nil, errors.New("certs: no certificate configured")
}

func (s *Source) getClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if c := s.Certificate(); c != nil {
		return c, nil
	}
	return &tls.Certificate{}, nil // present none
}

// verifyChain checks a presented chain against the current pool for the
// given use, without a host name: the CA is the identity.
func (s *Source) verifyChain(chain []*x509.Certificate, usage x509.ExtKeyUsage) error {
	pool := s.Pool()
	if pool == nil {
		return errors.New("certs: no CA configured to verify the other side")
	}
	if len(chain) == 0 {
		return errors.New("certs: the other side presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
	if err != nil {
		return fmt.Errorf("certs: certificate of %q: %w", chain[0].Subject.CommonName, err)
	}
	return nil
}

// verifyPeer checks a node's chain: from the peer CA, and a node
// certificate, which serves as well as dials (both extended key usages).
// Client certificates carry clientAuth alone, so where one CA signs both
// (scripts/dev-certs.sh), an app's certificate still cannot pass as a node.
func (s *Source) verifyPeer(chain []*x509.Certificate, usage x509.ExtKeyUsage) error {
	if err := s.verifyChain(chain, usage); err != nil {
		return err
	}
	leaf := chain[0]
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return fmt.Errorf("certs: certificate of %q is no node certificate: a peer's needs both the serverAuth and clientAuth extended key usages", leaf.Subject.CommonName)
	}
	return nil
}
