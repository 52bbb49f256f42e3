// Package devcerts makes the certificates, tokens and gossip key of a local
// or test cluster: one CA (ECDSA P-256), a certificate per node usable as a
// server and as a client (mTLS between nodes), a client certificate per role
// (CN = name, OU = role), a bearer token per role with its hashed token file,
// and a memberlist key. It is for development and tests: the CA key sits
// next to the certificates, and one CA signs both peers and clients.
package devcerts

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Roles a token or client certificate can carry, as syncd's auth names them.
const (
	RoleAdmin  = "admin"
	RoleApp    = "app"
	RoleReader = "reader"
)

// Roles lists every role in the order files and token lines are written.
var Roles = []string{RoleAdmin, RoleApp, RoleReader}

// DefaultNodes are the nodes Options without Nodes get.
var DefaultNodes = []string{"n1", "n2", "n3"}

// DefaultValidity is how long certificates last unless Options say.
const DefaultValidity = 365 * 24 * time.Hour

// GossipKeyBytes is the length of the memberlist key: AES-256.
const GossipKeyBytes = 32

// Options say what to make. The zero value makes nodes n1, n2, n3.
type Options struct {
	// Nodes are the node names: each gets NAME.pem with CN=NAME.
	Nodes []string
	// Hosts are extra DNS names or IP addresses every node certificate
	// carries besides its name, localhost, 127.0.0.1 and ::1.
	Hosts []string
	// CAName is the CA's common name ("syncstore dev CA" when empty). Two
	// bundles are unrelated whatever their names: each has its own key.
	CAName string
	// Validity is how long the certificates last (DefaultValidity when 0).
	Validity time.Duration
	// Overwrite lets Write replace files that exist; without it Write
	// refuses, so a second run cannot silently replace a cluster's CA.
	Overwrite bool
}

// Cert is a certificate with its key, parsed and as PEM.
type Cert struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
	KeyPEM  []byte
}

// TLSCertificate is the certificate and key for a tls.Config.
func (c Cert) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
}

// Token is a bearer token: its name, role and secret. The token file holds
// only the secret's hash.
type Token struct {
	Name, Role, Secret string
}

// Bundle is everything Generate writes, in memory.
type Bundle struct {
	CA        Cert
	NodeNames []string        // in the order asked for
	Nodes     map[string]Cert // by node name
	Clients   map[string]Cert // by role
	Tokens    []Token         // one per role, in Roles order
	GossipKey []byte          // GossipKeyBytes random bytes
}

// Generate makes a bundle and writes it into dir (see Write).
func Generate(dir string, opts Options) error {
	b, err := New(opts)
	if err != nil {
		return err
	}
	_, err = b.Write(dir, opts.Overwrite)
	return err
}

// nodeName is what a node name may be: it names files.
var nodeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// New makes a bundle in memory.
func New(opts Options) (*Bundle, error) {
	nodes := opts.Nodes
	if len(nodes) == 0 {
		nodes = DefaultNodes
	}
	if err := checkNodes(nodes); err != nil {
		return nil, err
	}
	dns, ips, err := splitHosts(opts.Hosts)
	if err != nil {
		return nil, err
	}
	validity := opts.Validity
	if validity <= 0 {
		validity = DefaultValidity
	}
	caName := opts.CAName
	if caName == "" {
		caName = "syncstore dev CA"
	}
	// Back-date a little: a container's or peer's clock may be behind.
	notBefore := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	notAfter := notBefore.Add(validity)

	ca, err := issue(&x509.Certificate{
		Subject:               pkix.Name{CommonName: caName, Organization: []string{"syncstore dev"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("devcerts: CA: %w", err)
	}
	b := &Bundle{CA: ca, NodeNames: slices.Clone(nodes), Nodes: map[string]Cert{}, Clients: map[string]Cert{}}
	for _, name := range nodes {
		c, err := issue(&x509.Certificate{
			Subject:     pkix.Name{CommonName: name, Organization: []string{"syncstore dev"}},
			NotBefore:   notBefore,
			NotAfter:    notAfter,
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			DNSNames:    dedupe(append([]string{name, "localhost"}, dns...)),
			IPAddresses: dedupeIPs(append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, ips...)),
		}, &ca)
		if err != nil {
			return nil, fmt.Errorf("devcerts: node %s: %w", name, err)
		}
		b.Nodes[name] = c
	}
	for _, role := range Roles {
		c, err := issue(&x509.Certificate{
			Subject:     pkix.Name{CommonName: role, OrganizationalUnit: []string{role}, Organization: []string{"syncstore dev"}},
			NotBefore:   notBefore,
			NotAfter:    notAfter,
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}, &ca)
		if err != nil {
			return nil, fmt.Errorf("devcerts: client %s: %w", role, err)
		}
		b.Clients[role] = c
		secret, err := randomHex(32)
		if err != nil {
			return nil, fmt.Errorf("devcerts: token %s: %w", role, err)
		}
		b.Tokens = append(b.Tokens, Token{Name: role, Role: role, Secret: secret})
	}
	b.GossipKey = make([]byte, GossipKeyBytes)
	if _, err := rand.Read(b.GossipKey); err != nil {
		return nil, fmt.Errorf("devcerts: gossip key: %w", err)
	}
	return b, nil
}

func checkNodes(nodes []string) error {
	seen := map[string]bool{}
	for _, n := range nodes {
		switch {
		case !nodeName.MatchString(n):
			return fmt.Errorf("devcerts: node name %q: use letters, digits, '.', '_' and '-' (it names files)", n)
		case n == "ca" || strings.HasPrefix(n, "ca-") || strings.HasPrefix(n, "client-") || strings.HasPrefix(n, "token"):
			return fmt.Errorf("devcerts: node name %q would clash with the CA, client or token files", n)
		case seen[n]:
			return fmt.Errorf("devcerts: node %q named twice", n)
		}
		seen[n] = true
	}
	return nil
}

func splitHosts(hosts []string) (dns []string, ips []net.IP, err error) {
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		switch {
		case h == "":
		case net.ParseIP(h) != nil:
			ips = append(ips, net.ParseIP(h))
		case strings.ContainsAny(h, " /:@"):
			return nil, nil, fmt.Errorf("devcerts: host %q is neither a DNS name nor an IP address", h)
		default:
			dns = append(dns, h)
		}
	}
	return dns, ips, nil
}

// issue makes a key and a certificate from tmpl, signed by parent (self
// signed when parent is nil).
func issue(tmpl *x509.Certificate, parent *Cert) (Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Cert{}, fmt.Errorf("key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return Cert{}, fmt.Errorf("serial: %w", err)
	}
	tmpl.SerialNumber = serial
	signerCert, signerKey := tmpl, key
	if parent != nil {
		signerCert, signerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, &key.PublicKey, signerKey)
	if err != nil {
		return Cert{}, fmt.Errorf("sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return Cert{}, fmt.Errorf("parse: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Cert{}, fmt.Errorf("marshal key: %w", err)
	}
	return Cert{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// Pool is a cert pool holding the bundle's CA.
func (b *Bundle) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(b.CA.Cert)
	return p
}

// Token returns the secret of role's token, "" for an unknown role.
func (b *Bundle) Token(role string) string {
	for _, t := range b.Tokens {
		if t.Role == role {
			return t.Secret
		}
	}
	return ""
}

// ServerTLS is a tls.Config for node's listener that also verifies client
// certificates against the CA when they are presented.
func (b *Bundle) ServerTLS(node string) (*tls.Config, error) {
	c, ok := b.Nodes[node]
	if !ok {
		return nil, fmt.Errorf("devcerts: no node %q in the bundle", node)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{c.TLSCertificate()},
		ClientCAs:    b.Pool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// ClientTLS is a tls.Config trusting the CA, presenting role's client
// certificate when role is not "".
func (b *Bundle) ClientTLS(role string) (*tls.Config, error) {
	cfg := &tls.Config{RootCAs: b.Pool(), MinVersion: tls.VersionTLS12}
	if role != "" {
		c, ok := b.Clients[role]
		if !ok {
			return nil, fmt.Errorf("devcerts: no client certificate for role %q", role)
		}
		cfg.Certificates = []tls.Certificate{c.TLSCertificate()}
	}
	return cfg, nil
}

// GossipKeyBase64 is the gossip key as --gossip-key takes it.
func (b *Bundle) GossipKeyBase64() string {
	return base64.StdEncoding.EncodeToString(b.GossipKey)
}

// TokenFile is the token file's text: a comment, then NAME ROLE SHA256HEX.
func (b *Bundle) TokenFile() []byte {
	var sb strings.Builder
	sb.WriteString("# syncd token file: NAME ROLE SHA256HEX, the lowercase hex SHA-256 of the secret token.\n")
	sb.WriteString("# Made by internal/devcerts; the secrets are in token-NAME next to it.\n")
	for _, t := range b.Tokens {
		fmt.Fprintf(&sb, "%s %s %s\n", t.Name, t.Role, HashToken(t.Secret))
	}
	return []byte(sb.String())
}

// HashToken is how the token file stores a secret.
func HashToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

func dedupe(s []string) []string {
	var out []string
	for _, v := range s {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func dedupeIPs(s []net.IP) []net.IP {
	var out []net.IP
	for _, ip := range s {
		if !slices.ContainsFunc(out, ip.Equal) {
			out = append(out, ip)
		}
	}
	return out
}

// ErrExists is wrapped by Write's error when a file exists and overwrite
// is off.
var ErrExists = errors.New("file exists")
