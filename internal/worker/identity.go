package worker

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/auth"
	"github.com/devops-platform/devops/internal/pki"
	"github.com/devops-platform/devops/internal/retry"
)

// SecurityConfig is how a worker proves who it is and checks the manager.
type SecurityConfig struct {
	// JoinToken is a join token ("ID.SECRET.sha256:HEX", see internal/auth)
	// that buys the worker its first certificate; it also pins the manager's
	// CA. Not needed once the worker holds an unexpired certificate in its
	// data dir.
	JoinToken string
	// Insecure talks plaintext with no authentication (development only):
	// refused unless the worker listens on loopback.
	Insecure bool
}

// Files in the worker's data dir.
const (
	workerCertFile = "worker.crt"
	workerKeyFile  = "worker.key"
	workerCAFile   = "ca.crt"
)

// identity is the worker's certificate, obtained with the join token and
// renewed before it expires.
type identity struct {
	dir, name, token, caHash string
	insecure                 bool
	log                      *slog.Logger

	mu   sync.Mutex // protects cert and ca
	cert *tls.Certificate
	ca   *x509.Certificate
}

func newIdentity(cfg Config, log *slog.Logger) (*identity, error) {
	sc := cfg.Security
	id := &identity{dir: cfg.DataDir, name: cfg.Name, token: strings.TrimSpace(sc.JoinToken), insecure: sc.Insecure, log: log}
	if sc.Insecure {
		for _, a := range []string{cfg.Listen, cfg.HTTP} {
			if a != "-" && !pki.IsLoopback(a) {
				return nil, fmt.Errorf("--insecure is refused: %s is not a loopback address (plaintext without authentication is for development on 127.0.0.1 only)", a)
			}
		}
		log.Warn("INSECURE: plaintext gRPC with no authentication; anyone on this machine can run commands here. For development only.")
		return id, nil
	}
	if id.token != "" {
		_, _, hash, err := auth.Parse(id.token)
		if err != nil || hash == "" {
			return nil, errors.New("join token: malformed (want ID.SECRET.sha256:HEX, as printed by `devops token create --role worker`)")
		}
		id.caHash = hash
	}
	id.load()
	if id.cert == nil && id.token == "" {
		return nil, errors.New("no join token and no certificate in the data dir: set DEVOPS_JOIN_TOKEN or --join-token-file (the manager writes one in its data dir, join.token)")
	}
	return id, nil
}

// load reads a certificate saved by an earlier join, if it is still valid
// and from the CA the token pins.
func (id *identity) load() {
	certPEM, err1 := os.ReadFile(filepath.Join(id.dir, workerCertFile))
	keyPEM, err2 := os.ReadFile(filepath.Join(id.dir, workerKeyFile))
	ca, err3 := pki.LoadCert(filepath.Join(id.dir, workerCAFile))
	if err1 != nil || err2 != nil || err3 != nil {
		return
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil || c.Leaf == nil || time.Now().After(c.Leaf.NotAfter) || c.Leaf.Subject.CommonName != id.name {
		return
	}
	if id.caHash != "" && pki.Hash(ca) != id.caHash {
		return // the token is for another manager: join again
	}
	if id.caHash == "" {
		id.caHash = pki.Hash(ca)
	}
	id.cert, id.ca = &c, ca
}

func (id *identity) current() (*tls.Certificate, *x509.Certificate) {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.cert, id.ca
}

// verifyManager checks the manager's certificate: against the CA once the
// worker holds it, else against the join token's pin.
func (id *identity) verifyManager(host string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the manager sent no certificate")
		}
		if _, ca := id.current(); ca != nil {
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca)
			if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host}); err != nil {
				return fmt.Errorf("manager certificate: %w", err)
			}
			return nil
		}
		_, err := pki.VerifyPinned(cs.PeerCertificates, id.caHash, host)
		return err
	}
}

// managerCreds is the transport to the manager: TLS verified as above, and
// the worker's certificate once it has one.
func (id *identity) managerCreds(addr string) credentials.TransportCredentials {
	if id.insecure {
		return insecure.NewCredentials()
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	return credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verification is done by VerifyConnection: against the pinned CA.
		InsecureSkipVerify: true, //nolint:gosec // see VerifyConnection
		VerifyConnection:   id.verifyManager(host),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c, _ := id.current(); c != nil {
				return c, nil
			}
			return &tls.Certificate{}, nil // none yet: joining
		},
	})
}

// serverOption is the transport of the worker's gRPC server: its current
// certificate, and the manager's client certificate verified by the CA.
func (id *identity) serverOption() grpc.ServerOption {
	if id.insecure {
		return grpc.Creds(insecure.NewCredentials())
	}
	return grpc.Creds(sniffCreds{credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, ca := id.current()
			if cert == nil {
				return nil, errors.New("this worker has not joined the manager yet")
			}
			pool := x509.NewCertPool()
			pool.AddCert(ca)
			// The health service answers anyone (container probes); the
			// interceptor requires the manager's certificate for the rest.
			return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*cert}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}, nil
		},
	})})
}

func (id *identity) check(ctx context.Context, method string) error {
	if id.insecure || !strings.HasPrefix(method, "/devops.v1.WorkerProcessService/") {
		return nil
	}
	leaf := peerCert(ctx)
	if leaf == nil || pki.Role(leaf) != pki.RoleManager {
		return status.Error(codes.Unauthenticated, "only the manager may call this worker")
	}
	return nil
}

func (id *identity) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := id.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (id *identity) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := id.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// join gets a certificate with the join token unless the worker holds a
// valid one, retrying while the manager is unreachable; then it keeps the
// certificate renewed until ctx ends. It returns an error when the manager
// refuses the token for good.
func (w *Worker) join(ctx context.Context, conn *grpc.ClientConn) error {
	id := w.ident
	if id.insecure {
		return nil
	}
	if c, _ := id.current(); c == nil {
		b := retry.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
		for {
			err := id.joinOnce(ctx, w.cfg.Manager)
			if err == nil {
				break
			}
			switch status.Code(err) {
			case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument:
				return fmt.Errorf("join manager %s: %s", w.cfg.Manager, status.Convert(err).Message())
			}
			if ctx.Err() != nil {
				return nil
			}
			d := b.Next()
			w.log.Warn("join manager", "manager", w.cfg.Manager, "err", status.Convert(err).Message(), "retry_in", d.Round(time.Millisecond))
			if retry.Sleep(ctx, d) != nil {
				return nil
			}
		}
	}
	w.wg.Add(1)
	go func() { defer w.wg.Done(); id.renewLoop(ctx, conn, w.cfg.Manager) }()
	return nil
}

// joinOnce trades the join token for a certificate, over a connection of
// its own (the main one must handshake with the certificate).
func (id *identity) joinOnce(ctx context.Context, addr string) error {
	if id.token == "" {
		return status.Error(codes.Unauthenticated, "the certificate expired and there is no join token to get another")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(id.managerCreds(addr)), grpc.WithDisableServiceConfig())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	defer conn.Close()
	key, csr, err := pki.NewRequest(id.name)
	if err != nil {
		return err
	}
	resp, err := pb.NewSecurityServiceClient(conn).JoinWorker(ctx, &pb.JoinWorkerRequest{Token: id.token, Name: id.name, Csr: csr})
	if err != nil {
		if strings.Contains(status.Convert(err).Message(), "does not match the join token") {
			return status.Error(codes.PermissionDenied, status.Convert(err).Message())
		}
		return err
	}
	if err := id.install(key, resp.GetCertificatePem(), resp.GetCaPem()); err != nil {
		return err
	}
	id.log.Info("joined the manager: certificate issued", "manager", addr)
	return nil
}

// install checks and saves a certificate the manager issued.
func (id *identity) install(key *ecdsa.PrivateKey, certPEM, caPEM []byte) error {
	ca, err := pki.ParseCertPEM(caPEM)
	if err != nil {
		return fmt.Errorf("CA from the manager: %w", err)
	}
	if id.caHash != "" && pki.Hash(ca) != id.caHash {
		return status.Error(codes.PermissionDenied, "the manager sent a CA that does not match the join token")
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return err
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("certificate from the manager: %w", err)
	}
	c.Certificate = append(c.Certificate, ca.Raw)
	for _, f := range []struct {
		name string
		data []byte
	}{{workerKeyFile, keyPEM}, {workerCertFile, certPEM}, {workerCAFile, caPEM}} {
		if err := pki.WriteFile(filepath.Join(id.dir, f.name), f.data); err != nil {
			return fmt.Errorf("save %s: %w", f.name, err)
		}
	}
	id.mu.Lock()
	id.cert, id.ca = &c, ca
	id.caHash = pki.Hash(ca)
	id.mu.Unlock()
	return nil
}

// renewLoop renews the certificate when two thirds of its life have passed.
func (id *identity) renewLoop(ctx context.Context, conn *grpc.ClientConn, addr string) {
	b := retry.Backoff{Min: time.Second, Max: time.Minute}
	for {
		c, _ := id.current()
		issued := c.Leaf.NotBefore.Add(pki.Backdate)
		at := issued.Add(c.Leaf.NotAfter.Sub(issued) * 2 / 3)
		if retry.Sleep(ctx, max(time.Until(at), time.Second)) != nil {
			return
		}
		err := id.renewOnce(ctx, conn)
		if err != nil && time.Now().After(c.Leaf.NotAfter) {
			err = id.joinOnce(ctx, addr) // expired: start over with the token
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d := b.Next()
			id.log.Warn("renew certificate", "err", status.Convert(err).Message(), "retry_in", d)
			if retry.Sleep(ctx, d) != nil {
				return
			}
			continue
		}
		b.Reset()
		nc, _ := id.current()
		id.log.Info("certificate renewed", "not_after", nc.Leaf.NotAfter)
	}
}

func (id *identity) renewOnce(ctx context.Context, conn *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	key, csr, err := pki.NewRequest(id.name)
	if err != nil {
		return err
	}
	resp, err := pb.NewSecurityServiceClient(conn).RenewCertificate(ctx, &pb.RenewCertificateRequest{Csr: csr})
	if err != nil {
		return err
	}
	return id.install(key, resp.GetCertificatePem(), resp.GetCaPem())
}

func peerCert(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return ti.State.VerifiedChains[0][0]
}
