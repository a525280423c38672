package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/wire"
)

// Option adjusts Dial.
type Option func(*dialOptions)

type dialOptions struct {
	tls   *tls.Config
	token string
}

func (o dialOptions) grpc() []grpc.DialOption {
	var out []grpc.DialOption
	if o.tls != nil {
		out = append(out, grpc.WithTransportCredentials(credentials.NewTLS(o.tls)))
	}
	if o.token != "" {
		out = append(out, grpc.WithPerRPCCredentials(bearer{token: o.token, secure: o.tls != nil}))
	}
	return out
}

// WithTLS makes the client talk TLS with cfg.
func WithTLS(cfg *tls.Config) Option { return func(o *dialOptions) { o.tls = cfg } }

// WithToken sends an API token with every call.
func WithToken(token string) Option {
	return func(o *dialOptions) { o.token = strings.TrimSpace(token) }
}

// TLSConfig trusts the CA certificate in caFile (PEM).
func TLSConfig(caFile string) (*tls.Config, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("read CA %s: no PEM certificate", caFile)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}, nil
}

// bearer sends "authorization: Bearer TOKEN".
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.secure }

func (c *Client) security() pb.SecurityServiceClient { return pb.NewSecurityServiceClient(c.conn) }

// TokenInfo describes a token; the secret is never part of it.
type TokenInfo struct {
	ID, Role, Scope, Description, CreatedBy string
	CreatedAt, ExpiresAt                    time.Time // ExpiresAt zero: never
	Revoked                                 bool
}

func tokenFromPB(t *pb.Token) TokenInfo {
	out := TokenInfo{ID: t.GetId(), Role: t.GetRole(), Scope: t.GetScope(), Description: t.GetDescription(), CreatedBy: t.GetCreatedBy(),
		CreatedAt: t.GetCreatedAt().AsTime(), Revoked: t.GetRevoked()}
	if t.GetExpiresAt() != nil {
		out.ExpiresAt = t.GetExpiresAt().AsTime()
	}
	return out
}

// CreateToken creates a token and returns it with its secret, the token
// string itself (shown once).
func (c *Client) CreateToken(ctx context.Context, role, scope, description string, ttl time.Duration) (TokenInfo, string, error) {
	// A negative ttl goes too, for the manager to refuse: dropped, it made
	// a token that never expires.
	req := &pb.CreateTokenRequest{Role: role, Scope: scope, Description: description, Ttl: wire.Duration(ttl)}
	resp, err := c.security().CreateToken(ctx, req)
	if err != nil {
		return TokenInfo{}, "", err
	}
	return tokenFromPB(resp.GetToken()), resp.GetSecret(), nil
}

// Tokens lists every token.
func (c *Client) Tokens(ctx context.Context) ([]TokenInfo, error) {
	resp, err := c.security().ListTokens(ctx, &pb.ListTokensRequest{})
	if err != nil {
		return nil, err
	}
	out := make([]TokenInfo, len(resp.GetTokens()))
	for i, t := range resp.GetTokens() {
		out[i] = tokenFromPB(t)
	}
	return out, nil
}

// RevokeToken revokes a token by id.
func (c *Client) RevokeToken(ctx context.Context, id string) (TokenInfo, error) {
	resp, err := c.security().RevokeToken(ctx, &pb.RevokeTokenRequest{Id: id})
	if err != nil {
		return TokenInfo{}, err
	}
	return tokenFromPB(resp.GetToken()), nil
}

// RevokeWorker cuts a worker off (or, with undo, admits its name again).
func (c *Client) RevokeWorker(ctx context.Context, worker string, undo bool) (string, error) {
	resp, err := c.security().RevokeWorker(ctx, &pb.RevokeWorkerRequest{Worker: worker, Undo: undo})
	if err != nil {
		return "", err
	}
	return resp.GetWorker(), nil
}

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	Time                            time.Time
	Principal, Role, Action, Target string
	Argv, Workers                   []string
	Stdin                           string // length and SHA-256 of a command's input
	Result, Peer                    string
}

// Audit returns the last limit entries of the audit log, oldest first, and
// how many of the oldest of them the manager left out to keep its answer
// under the message size limit.
func (c *Client) Audit(ctx context.Context, limit int) (es []AuditEntry, leftOut int, err error) {
	resp, err := c.security().ListAudit(ctx, &pb.ListAuditRequest{Limit: int32(limit)})
	if err != nil {
		return nil, 0, err
	}
	es = make([]AuditEntry, len(resp.GetEntries()))
	for i, e := range resp.GetEntries() {
		es[i] = AuditEntry{Time: e.GetTime().AsTime(), Principal: e.GetPrincipal(), Role: e.GetRole(), Action: e.GetAction(),
			Target: e.GetTarget(), Argv: e.GetArgv(), Stdin: e.GetStdin(), Workers: e.GetWorkers(), Result: e.GetResult(), Peer: e.GetPeer()}
	}
	return es, int(resp.GetLeftOut()), nil
}

// WhoAmI returns who the client's token is: principal, role and scope.
func (c *Client) WhoAmI(ctx context.Context) (principal, role, scope string, err error) {
	resp, err := c.security().WhoAmI(ctx, &pb.WhoAmIRequest{})
	if err != nil {
		return "", "", "", err
	}
	return resp.GetPrincipal(), resp.GetRole(), resp.GetScope(), nil
}
