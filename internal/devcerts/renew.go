package devcerts

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// RenewNode issues node a new certificate and key from the bundle's CA, with
// the same names and usages, replaces it in the bundle, and writes
// NAME.pem and NAME-key.pem into dir when dir is not "": a certificate
// renewal, for the SIGHUP reload test.
func (b *Bundle) RenewNode(name, dir string) (Cert, error) {
	old, ok := b.Nodes[name]
	if !ok {
		return Cert{}, fmt.Errorf("devcerts: no node %q in the bundle", name)
	}
	tmpl := *old.Cert
	tmpl.NotBefore = time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	tmpl.SubjectKeyId, tmpl.AuthorityKeyId = nil, nil // of the old key
	c, err := issue(&tmpl, &b.CA)
	if err != nil {
		return Cert{}, fmt.Errorf("devcerts: renew %s: %w", name, err)
	}
	b.Nodes[name] = c
	if dir == "" {
		return c, nil
	}
	// The key first: a reload between the two writes fails on the pair and
	// keeps the old one, and the next reload takes both.
	if err := os.WriteFile(filepath.Join(dir, name+"-key.pem"), c.KeyPEM, 0o600); err != nil {
		return Cert{}, fmt.Errorf("devcerts: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".pem"), c.CertPEM, 0o644); err != nil {
		return Cert{}, fmt.Errorf("devcerts: %w", err)
	}
	return c, nil
}
