package manager

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/devops-platform/devops/internal/audit"
	"github.com/devops-platform/devops/internal/auth"
	"github.com/devops-platform/devops/internal/pki"
)

// SecurityConfig is how the manager authenticates: TLS, tokens, worker
// certificates and the audit log. Zero values take the defaults in brackets.
type SecurityConfig struct {
	// Insecure serves plaintext with no authentication, for development:
	// New refuses it unless every listen address is loopback.
	Insecure bool
	// CACert and CAKey replace the CA the manager creates in its data dir
	// [DataDir/ca.crt, DataDir/ca.key]. Without CAKey the manager cannot
	// issue worker certificates.
	CACert, CAKey string
	// Cert and Key replace the manager's server certificate, which is
	// otherwise issued by the CA at every start for Hosts.
	Cert, Key string
	// Advertise lists extra names and addresses the server certificate covers.
	Advertise []string
	// WorkerCertTTL is how long a worker certificate is valid; workers renew
	// at two thirds of it [1h].
	WorkerCertTTL time.Duration
	// RunRate and RunBurst limit run requests per client (token or worker
	// address) [10/s, burst 50]; a negative RunRate disables the limit.
	RunRate  float64
	RunBurst int
	// AuditMaxSize is how large audit.log grows before it is set aside as
	// audit.log.<UTC time> [100 MiB]; negative: it grows for good.
	AuditMaxSize int64
	// AuditKeep is how many set-aside audit logs are kept, the oldest
	// removed first [10]; negative: every one.
	AuditKeep int
}

// Defaults of the audit log's rotation: 1.1 GB at most, some 3 million
// entries of a few hundred bytes.
const (
	DefaultAuditMaxSize = 100 << 20
	DefaultAuditKeep    = 10
)

// security holds the manager's TLS material, token store and audit log.
type security struct {
	insecure   bool
	ca         *pki.CA
	serverCert tls.Certificate // the chain ends with the CA, for workers that pin it
	clientCert tls.Certificate // what the manager presents to workers
	tokens     *auth.Store     // nil when insecure
	audit      auditLog
	runLimit   *auth.Limiter
	certTTL    time.Duration
}

// auditLog is the audit log as the manager uses it: an *audit.Log, or a
// test's stand-in.
type auditLog interface {
	Append(audit.Entry) error
	Tail(n int) ([]audit.Entry, error)
	Close() error
}

func newSecurity(cfg Config, log *slog.Logger) (*security, error) {
	sc := cfg.Security
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	s := &security{insecure: sc.Insecure, certTTL: sc.WorkerCertTTL}
	if s.certTTL <= 0 {
		s.certTTL = time.Hour
	}
	rate, burst := sc.RunRate, sc.RunBurst
	if rate == 0 {
		rate = 10
	}
	if burst <= 0 {
		burst = 50
	}
	s.runLimit = auth.NewLimiter(rate, burst, nil)
	var err error
	rot := audit.Rotation{MaxSize: cmp.Or(sc.AuditMaxSize, DefaultAuditMaxSize), Keep: cmp.Or(sc.AuditKeep, DefaultAuditKeep)}
	rot.MaxSize, rot.Keep = max(rot.MaxSize, 0), max(rot.Keep, 0) // negative: no bound
	if s.audit, err = audit.Open(filepath.Join(cfg.DataDir, "audit.log"), rot); err != nil {
		return nil, err
	}
	if sc.Insecure {
		for _, a := range []string{cfg.Listen, cfg.HTTP} {
			if a != "-" && !pki.IsLoopback(a) {
				s.audit.Close()
				return nil, fmt.Errorf("--insecure is refused: %s is not a loopback address (plaintext without authentication is for development on 127.0.0.1 only)", a)
			}
		}
		log.Warn("INSECURE: serving plaintext gRPC with no authentication; anyone on this machine can run commands on every worker. For development only.")
		return s, nil
	}
	if err := s.loadTLS(cfg, log); err != nil {
		s.audit.Close()
		return nil, err
	}
	if s.tokens, err = auth.Open(filepath.Join(cfg.DataDir, "tokens.json"), nil); err != nil {
		s.audit.Close()
		return nil, err
	}
	if err := s.firstTokens(cfg.DataDir, log); err != nil {
		s.audit.Close()
		return nil, err
	}
	return s, nil
}

// loadTLS loads or creates the CA and issues the manager's certificates.
func (s *security) loadTLS(cfg Config, log *slog.Logger) error {
	sc := cfg.Security
	if sc.CACert != "" {
		cert, err := pki.LoadCert(sc.CACert)
		if err != nil {
			return fmt.Errorf("--ca-cert: %w", err)
		}
		s.ca = &pki.CA{Cert: cert}
		if sc.CAKey != "" {
			if s.ca.Key, err = pki.LoadKey(sc.CAKey); err != nil {
				return fmt.Errorf("--ca-key: %w", err)
			}
		}
	} else {
		ca, created, err := pki.LoadOrCreateCA(cfg.DataDir)
		if err != nil {
			return err
		}
		if created {
			log.Info("created a CA", "cert", filepath.Join(cfg.DataDir, pki.CAFile), "hash", ca.Hash())
		}
		s.ca = ca
	}
	if sc.Cert != "" {
		c, err := tls.LoadX509KeyPair(sc.Cert, sc.Key)
		if err != nil {
			return fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		c.Certificate = append(c.Certificate, s.ca.Cert.Raw)
		s.serverCert = c
	}
	if s.ca.Key == nil {
		if sc.Cert == "" {
			return errors.New("the manager needs --ca-key to issue its own certificate, or --tls-cert and --tls-key")
		}
		log.Warn("no CA key: workers cannot join (their certificates cannot be issued)")
		s.clientCert = s.serverCert
		return nil
	}
	if sc.Cert == "" {
		c, err := s.ca.IssueKeyPair(pki.Leaf{CommonName: pki.ManagerName, Role: pki.RoleManager,
			Hosts: pki.ManagerHosts(cfg.Listen, sc.Advertise), TTL: 365 * 24 * time.Hour})
		if err != nil {
			return err
		}
		s.serverCert = c
		certPEM := pki.EncodeCert(c.Leaf)
		if err := pki.WriteFile(filepath.Join(cfg.DataDir, pki.CertFile), certPEM); err != nil {
			return fmt.Errorf("write manager certificate: %w", err)
		}
	}
	c, err := s.ca.IssueKeyPair(pki.Leaf{CommonName: pki.ManagerName, Role: pki.RoleManager, TTL: 365 * 24 * time.Hour})
	if err != nil {
		return err
	}
	s.clientCert = c
	return nil
}

// firstTokens creates admin.token and join.token when they are missing.
func (s *security) firstTokens(dir string, log *slog.Logger) error {
	for _, f := range []struct {
		file string
		role auth.Role
	}{{pki.AdminTokenFile, auth.Admin}, {pki.JoinTokenFile, auth.Worker}} {
		path := filepath.Join(dir, f.file)
		if _, err := os.Stat(path); err == nil {
			continue
		}
		if f.role == auth.Worker && s.ca.Key == nil {
			continue
		}
		_, str, err := s.tokens.Create(auth.NewToken{Role: f.role, Description: "created at first start (" + f.file + ")", CreatedBy: "manager", CAHash: s.ca.Hash()})
		if err != nil {
			return err
		}
		if err := pki.WriteFile(path, []byte(str+"\n")); err != nil {
			return fmt.Errorf("write %s: %w", f.file, err)
		}
		log.Info("created a token", "role", f.role, "file", path)
	}
	return nil
}

// serverOption is the transport of the manager's gRPC server.
func (s *security) serverOption() grpc.ServerOption {
	if s.insecure {
		return grpc.Creds(insecure.NewCredentials())
	}
	return grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{s.serverCert},
		// Clients authenticate with tokens, workers with certificates: a
		// certificate is verified when given, and the interceptor decides
		// which calls need one.
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  s.ca.Pool(),
	}))
}

// readBufferSize is the gRPC server's read buffer. A plaintext
// connection borrows one from a pool for each read (grpc-go's ready
// reader; see rawread_linux.go). Over TLS grpc would keep a buffer of its
// own per connection, every worker's, and for nothing: crypto/tls already
// holds each record it decrypted and hands it out in any size asked for.
// 8 KiB there cost 7–10 KiB of the manager's RSS per idle worker (2,500
// simulated workers over TLS, bench/FINDINGS.md).
func (s *security) readBufferSize() int {
	if s.insecure {
		return 8 << 10
	}
	return 0
}

// workerCreds is the transport to a worker: mutual TLS, the worker's
// certificate must name it.
func (s *security) workerCreds(name string) credentials.TransportCredentials {
	if s.insecure {
		return insecure.NewCredentials()
	}
	return credentials.NewTLS(&tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{s.clientCert},
		RootCAs:      s.ca.Pool(),
		ServerName:   name,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || pki.Role(cs.PeerCertificates[0]) != pki.RoleWorker {
				return errors.New("the peer's certificate is not a worker certificate")
			}
			if s.tokens != nil {
				leaf := cs.PeerCertificates[0]
				if err := s.tokens.CheckWorker(leaf.Subject.CommonName, pki.Generation(leaf)); err != nil {
					return fmt.Errorf("worker %s: %w", leaf.Subject.CommonName, err)
				}
			}
			return nil
		},
	})
}

func (s *security) close() {
	if err := s.audit.Close(); err != nil {
		_ = err // nothing left to report it to at shutdown
	}
}
