// Package auth holds who may do what: API and join tokens (kept hashed in a
// file of the manager's data dir), their roles and scopes, the permission
// each role grants, revoked worker certificates and names, and a per-client
// rate limiter. It speaks neither gRPC nor TLS: the manager's interceptors
// use it. It imports only the standard library and the root package.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/devops-platform/devops"
)

// Role is what a token may do.
type Role string

// The roles. Worker tokens are join tokens: they only buy a certificate.
const (
	Admin    Role = "admin"    // everything, including tokens and revocation
	Operator Role = "operator" // run, kill, drain, read
	Viewer   Role = "viewer"   // read only
	Worker   Role = "worker"   // join a worker
)

// ParseRole reads a role name; ErrInvalid when unknown.
func ParseRole(s string) (Role, error) {
	switch r := Role(strings.ToLower(strings.TrimSpace(s))); r {
	case Admin, Operator, Viewer, Worker:
		return r, nil
	}
	return "", fmt.Errorf("%w: role %q: want admin, operator, viewer or worker", devops.ErrInvalid, s)
}

// Permission is what a call needs.
type Permission int

// The permissions, each granted to the roles listed.
const (
	Read   Permission = iota + 1 // admin, operator, viewer
	Write                        // admin, operator: run, kill, drain
	Manage                       // admin: tokens, revocation, audit
)

func (p Permission) String() string {
	switch p {
	case Read:
		return "read"
	case Write:
		return "run, kill and drain"
	case Manage:
		return "manage tokens, revoke workers or read the audit log"
	}
	return fmt.Sprintf("Permission(%d)", int(p))
}

// Allows reports whether a role grants a permission.
func (r Role) Allows(p Permission) bool {
	switch r {
	case Admin:
		return true
	case Operator:
		return p == Read || p == Write
	case Viewer:
		return p == Read
	}
	return false
}

// Errors of authentication; the manager maps them to Unauthenticated.
var (
	ErrNoToken      = errors.New("no token")
	ErrBadToken     = errors.New("unknown or malformed token")
	ErrExpired      = errors.New("token expired")
	ErrRevoked      = errors.New("token revoked")
	ErrWrongKind    = errors.New("wrong kind of token")
	ErrCertRevoked  = errors.New("certificate revoked")
	ErrNameRevoked  = errors.New("worker revoked")
	errTooManyFails = errors.New("too many tokens")
)

// Token is the record of one token; its secret is kept only as a hash.
type Token struct {
	ID          string    `json:"id"`
	Hash        string    `json:"hash"` // hex SHA-256 of the secret part
	Role        Role      `json:"role"`
	Scope       string    `json:"scope,omitempty"` // a label selector; empty: everything
	Description string    `json:"description,omitempty"`
	CreatedBy   string    `json:"created_by,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"` // zero: never
	Revoked     bool      `json:"revoked,omitempty"`
}

// Expired reports whether the token has expired at now.
func (t Token) Expired(now time.Time) bool { return !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt) }

// Token strings.
//
// An API token is "ID.SECRET": ID is 12 hex digits that name the record (it
// shows in `devops token list` and the audit log), SECRET is 32 hex digits
// (128 random bits). A join token adds the pin of the manager's CA:
// "ID.SECRET.sha256:HEX", HEX the SHA-256 of the CA certificate's
// SubjectPublicKeyInfo, as in kubeadm's --discovery-token-ca-cert-hash. The
// secret is stored as its SHA-256: it is random, so a slow hash adds nothing.
const (
	idLen     = 12
	secretLen = 32
)

// Parse splits a token string into its id, its secret and, for a join
// token, its CA pin.
func Parse(s string) (id, secret, caHash string, err error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 2 && len(parts) != 3 {
		return "", "", "", ErrBadToken
	}
	id, secret = parts[0], parts[1]
	if len(id) != idLen || len(secret) != secretLen || !isHex(id) || !isHex(secret) {
		return "", "", "", ErrBadToken
	}
	if len(parts) == 3 {
		caHash = parts[2]
		h, ok := strings.CutPrefix(caHash, "sha256:")
		if !ok || len(h) != 64 || !isHex(h) {
			return "", "", "", fmt.Errorf("%w: bad CA hash", ErrBadToken)
		}
	}
	return id, secret, caHash, nil
}

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func randomHex(n int) string {
	b := make([]byte, n/2)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// state is what the store file holds.
type state struct {
	Tokens map[string]*Token `json:"tokens"`
	// RevokedNames are workers refused until an admin admits them again.
	RevokedNames map[string]time.Time `json:"revoked_names"`
	// Generations counts, for each worker name ever revoked, its
	// revocations. A worker certificate carries its name's count at issue
	// (internal/pki's Leaf.Generation), and one with a lower count was
	// issued before a revocation: refused. So revoking a name revokes every
	// certificate it was ever issued without the store keeping a record
	// of each: it used to, and rewriting that record on every join and
	// renewal made 10,000 workers take two minutes to join (the file grew
	// to 1.2 MB, rewritten whole each time).
	Generations map[string]int `json:"generations,omitempty"`

	// The records of the store before generations, read only to carry
	// their revocations over (see Open).
	OldCerts        map[string]struct{ Name string } `json:"certs,omitempty"`
	OldRevokedCerts map[string]time.Time             `json:"revoked_certs,omitempty"`
}

// Store keeps tokens and revocations in one JSON file (mode 0600), written
// atomically on every change.
type Store struct {
	path string
	now  func() time.Time

	mu sync.Mutex // protects st and the file
	st state
}

// maxTokens bounds the store so that no caller grows it without limit.
const maxTokens = 10000

// Open loads the store at path, or starts an empty one. now is the clock;
// nil means time.Now.
func Open(path string, now func() time.Time) (*Store, error) {
	if now == nil {
		now = time.Now
	}
	s := &Store{path: path, now: now}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read tokens: %w", err)
	default:
		if err := json.Unmarshal(data, &s.st); err != nil {
			return nil, fmt.Errorf("read tokens %s: %w", path, err)
		}
	}
	if s.st.Tokens == nil {
		s.st.Tokens = map[string]*Token{}
	}
	if s.st.RevokedNames == nil {
		s.st.RevokedNames = map[string]time.Time{}
	}
	if s.st.Generations == nil {
		s.st.Generations = map[string]int{}
	}
	// A store written before generations kept each certificate's serial:
	// a name with a revoked certificate, or revoked itself, starts at
	// generation 1, so that its certificates (generation 0) stay refused.
	for serial := range s.st.OldRevokedCerts {
		if c, ok := s.st.OldCerts[serial]; ok {
			s.st.Generations[c.Name] = max(s.st.Generations[c.Name], 1)
		}
	}
	for name := range s.st.RevokedNames {
		s.st.Generations[name] = max(s.st.Generations[name], 1)
	}
	s.st.OldCerts, s.st.OldRevokedCerts = nil, nil
	return s, nil
}

func (s *Store) saveLocked() error {
	data, err := json.MarshalIndent(s.st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write tokens: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("write tokens: %w", err)
	}
	return nil
}

// NewToken describes a token to create.
type NewToken struct {
	Role        Role
	Scope       string
	Description string
	CreatedBy   string
	TTL         time.Duration // zero: never expires
	// CAHash is the manager CA's pin, required for a worker token.
	CAHash string
}

// Create makes a token and returns its record and the token string, which
// is shown once: only its hash is kept.
func (s *Store) Create(n NewToken) (Token, string, error) {
	if _, err := ParseRole(string(n.Role)); err != nil {
		return Token{}, "", err
	}
	if n.TTL < 0 {
		return Token{}, "", fmt.Errorf("%w: negative ttl", devops.ErrInvalid)
	}
	if n.Role == Worker && n.CAHash == "" {
		return Token{}, "", fmt.Errorf("%w: a join token needs the CA hash", devops.ErrInvalid)
	}
	if len(n.Description) > 256 {
		return Token{}, "", fmt.Errorf("%w: description longer than 256 bytes", devops.ErrInvalid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.st.Tokens) >= maxTokens {
		return Token{}, "", fmt.Errorf("%w: %v", devops.ErrNoCapacity, errTooManyFails)
	}
	now := s.now()
	t := &Token{ID: randomHex(idLen), Role: n.Role, Scope: n.Scope, Description: n.Description, CreatedBy: n.CreatedBy, CreatedAt: now.UTC()}
	if n.TTL > 0 {
		t.ExpiresAt = now.Add(n.TTL).UTC()
	}
	secret := randomHex(secretLen)
	t.Hash = hashSecret(secret)
	str := t.ID + "." + secret
	if n.Role == Worker {
		str += "." + n.CAHash
	}
	s.st.Tokens[t.ID] = t
	if err := s.saveLocked(); err != nil {
		delete(s.st.Tokens, t.ID)
		return Token{}, "", err
	}
	return *t, str, nil
}

// Authenticate checks a token string and returns its record. A join token
// is accepted only when join is true, and an API token only when it is
// false. Errors: ErrNoToken, ErrBadToken, ErrExpired, ErrRevoked, ErrWrongKind.
func (s *Store) Authenticate(str string, join bool) (Token, error) {
	if strings.TrimSpace(str) == "" {
		return Token{}, ErrNoToken
	}
	id, secret, _, err := Parse(str)
	if err != nil {
		return Token{}, err
	}
	s.mu.Lock()
	t, ok := s.st.Tokens[id]
	var tok Token
	if ok {
		tok = *t
	}
	s.mu.Unlock()
	if !ok || subtle.ConstantTimeCompare([]byte(tok.Hash), []byte(hashSecret(secret))) != 1 {
		return Token{}, ErrBadToken
	}
	switch {
	case tok.Revoked:
		return Token{}, ErrRevoked
	case tok.Expired(s.now()):
		return Token{}, ErrExpired
	case join != (tok.Role == Worker):
		return Token{}, ErrWrongKind
	}
	return tok, nil
}

// List returns every token, oldest first.
func (s *Store) List() []Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Token, 0, len(s.st.Tokens))
	for _, t := range s.st.Tokens {
		out = append(out, *t)
	}
	slices.SortFunc(out, func(a, b Token) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out
}

// Revoke revokes a token by id; ErrNotFound when there is none.
func (s *Store) Revoke(id string) (Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.st.Tokens[id]
	if !ok {
		return Token{}, fmt.Errorf("token %q: %w", id, devops.ErrNotFound)
	}
	t.Revoked = true
	return *t, s.saveLocked()
}

// RevokeWorker revokes every certificate issued to a worker name and
// refuses the name until AdmitWorker.
func (s *Store) RevokeWorker(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.Generations[name]++
	s.st.RevokedNames[name] = s.now().UTC()
	return s.saveLocked()
}

// AdmitWorker lets a revoked name join again; its old certificates stay revoked.
func (s *Store) AdmitWorker(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.st.RevokedNames, name)
	return s.saveLocked()
}

// CheckWorker reports ErrNameRevoked when a worker name is refused, and
// ErrCertRevoked when its certificate, of the given generation, was
// issued before the name was last revoked.
func (s *Store) CheckWorker(name string, generation int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.st.RevokedNames[name]; ok {
		return ErrNameRevoked
	}
	if generation < s.st.Generations[name] {
		return ErrCertRevoked
	}
	return nil
}

// WorkerGeneration is the generation a new certificate for name must
// carry, or ErrNameRevoked when the name is refused. Both come from one
// look, so a certificate issued while the name is being revoked carries
// the generation before: refused.
func (s *Store) WorkerGeneration(name string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.st.RevokedNames[name]; ok {
		return 0, ErrNameRevoked
	}
	return s.st.Generations[name], nil
}
