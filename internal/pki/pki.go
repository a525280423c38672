// Package pki holds the manager's small certificate authority and the
// pieces of TLS both ends need: the CA and the manager's own certificates in
// its data dir, worker certificates issued from requests, the hash of a CA
// that join tokens carry, and the TLS configs of the manager, the workers and
// the clients. It imports only the standard library and the root package.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Roles carried in a certificate's OrganizationalUnit.
const (
	RoleManager = "manager"
	RoleWorker  = "worker"
)

// ManagerName is the common name of the manager's certificates.
const ManagerName = "devops-manager"

// Files in the manager's data dir.
const (
	CAFile         = "ca.crt"
	CAKeyFile      = "ca.key"
	CertFile       = "manager.crt"
	KeyFile        = "manager.key"
	AdminTokenFile = "admin.token"
	JoinTokenFile  = "join.token"
)

// CA is a certificate authority: its certificate and, when it signs, its key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer // nil: the CA cannot issue
}

// Hash is the CA's pin: "sha256:" and the hex SHA-256 of its
// SubjectPublicKeyInfo, as kubeadm's discovery-token-ca-cert-hash.
func (ca *CA) Hash() string { return Hash(ca.Cert) }

// Hash returns the pin of a CA certificate (see CA.Hash).
func Hash(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Pool is a cert pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// PEM is the CA certificate in PEM.
func (ca *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// NewCA creates a self-signed CA valid for ten years.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Backdate is how far before its issue a certificate's validity starts,
// to tolerate small clock skew between machines.
const Backdate = 5 * time.Minute

// Leaf describes a certificate to issue.
type Leaf struct {
	CommonName string
	Role       string   // RoleManager or RoleWorker, kept in the OU
	Hosts      []string // DNS names and IP addresses
	TTL        time.Duration
	// Generation is how many times the worker's name was revoked when
	// the certificate was issued (internal/auth), kept in a second OU,
	// "generation=N", when not 0.
	Generation int
}

// Issue signs a certificate for pub, valid for both server and client
// authentication.
func (ca *CA) Issue(pub crypto.PublicKey, l Leaf) (*x509.Certificate, error) {
	if ca.Key == nil {
		return nil, errors.New("issue certificate: the CA key is not available")
	}
	now := time.Now()
	ou := []string{l.Role}
	if l.Generation != 0 {
		ou = append(ou, generationPrefix+strconv.Itoa(l.Generation))
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: l.CommonName, OrganizationalUnit: ou},
		NotBefore:    now.Add(-Backdate),
		NotAfter:     now.Add(l.TTL),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	for _, h := range l.Hosts {
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", l.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

// IssueKeyPair creates a key and a certificate for it, ready for TLS, with
// the CA certificate appended to the chain (so that a peer holding only the
// CA's pin can verify it).
func (ca *CA) IssueKeyPair(l Leaf) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := ca.Issue(key.Public(), l)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw, ca.Cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

// Role returns the role a certificate was issued for.
func Role(cert *x509.Certificate) string {
	if len(cert.Subject.OrganizationalUnit) == 0 {
		return ""
	}
	return cert.Subject.OrganizationalUnit[0]
}

const generationPrefix = "generation="

// Generation returns the generation a certificate was issued with (see
// Leaf): 0 when it carries none.
func Generation(cert *x509.Certificate) int {
	for _, ou := range cert.Subject.OrganizationalUnit[min(1, len(cert.Subject.OrganizationalUnit)):] {
		if v, ok := strings.CutPrefix(ou, generationPrefix); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return -1 // not one we issued: lower than any
			}
			return n
		}
	}
	return 0
}

// SerialString is how serial numbers are written and compared.
func SerialString(cert *x509.Certificate) string { return cert.SerialNumber.Text(16) }

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

// NewRequest creates a key and a certificate request for it.
func NewRequest(name string) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate request: %w", err)
	}
	return key, csr, nil
}

// ParseRequest parses a DER certificate request and checks its signature,
// which proves the caller holds the key.
func ParseRequest(der []byte) (*x509.CertificateRequest, error) {
	if len(der) == 0 || len(der) > 16<<10 {
		return nil, errors.New("certificate request: empty or too large")
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request signature: %w", err)
	}
	return csr, nil
}

// EncodeCert returns a certificate in PEM.
func EncodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// EncodeKey returns a private key in PKCS#8 PEM.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCertPEM reads the first certificate of a PEM file's content.
func ParseCertPEM(data []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM certificate")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

// LoadCert reads a PEM certificate file.
func LoadCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := ParseCertPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// LoadKey reads a PEM private key file (PKCS#8, EC or PKCS#1).
func LoadKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("%s: no PEM key", path)
	}
	var k any
	switch b.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: unsupported key type %T", path, k)
	}
	return s, nil
}

// WriteFile writes data atomically with mode 0600.
func WriteFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// LoadOrCreateCA loads the CA from dir, or creates it there on first start.
func LoadOrCreateCA(dir string) (*CA, bool, error) {
	certPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	cert, err := LoadCert(certPath)
	if err == nil {
		key, err := LoadKey(keyPath)
		if err != nil {
			return nil, false, fmt.Errorf("load CA key: %w", err)
		}
		return &CA{Cert: cert, Key: key}, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("load CA: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, err
	}
	ca, err := NewCA("devops CA")
	if err != nil {
		return nil, false, err
	}
	keyPEM, err := EncodeKey(ca.Key)
	if err != nil {
		return nil, false, err
	}
	if err := WriteFile(keyPath, keyPEM); err != nil {
		return nil, false, fmt.Errorf("write CA key: %w", err)
	}
	if err := WriteFile(certPath, ca.PEM()); err != nil {
		return nil, false, fmt.Errorf("write CA: %w", err)
	}
	return ca, true, nil
}

// ManagerHosts lists the names a manager's certificate covers: the listen
// host, the advertised ones, the hostname, localhost and 127.0.0.1 (and ::1).
func ManagerHosts(listen string, advertise []string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	for _, a := range append([]string{listen}, advertise...) {
		h := a
		if host, _, err := net.SplitHostPort(a); err == nil {
			h = host
		}
		if h != "" && h != "0.0.0.0" && h != "::" {
			hosts = append(hosts, h)
		}
	}
	seen := map[string]bool{}
	out := hosts[:0]
	for _, h := range hosts {
		if !seen[strings.ToLower(h)] {
			seen[strings.ToLower(h)] = true
			out = append(out, h)
		}
	}
	return out
}

// VerifyPinned checks a peer's chain the way a worker holding only a join
// token does: one certificate in the chain must be a CA whose pin is hash,
// and the leaf must chain to it and name host.
func VerifyPinned(chain []*x509.Certificate, hash, host string) (*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("the manager sent no certificate")
	}
	for _, c := range chain {
		if !c.IsCA || Hash(c) != hash {
			continue
		}
		pool := x509.NewCertPool()
		pool.AddCert(c)
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return nil, fmt.Errorf("manager certificate: %w", err)
		}
		return c, nil
	}
	return nil, fmt.Errorf("the manager's CA does not match the join token's CA hash %s: not the manager the token was made for", hash)
}

// IsLoopback reports whether a listen address binds loopback only: the
// condition for serving in plaintext with --insecure.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
