package manager

import (
	"context"
	"errors"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/audit"
	"github.com/devops-platform/devops/internal/auth"
	"github.com/devops-platform/devops/internal/pki"
	"github.com/devops-platform/devops/internal/scheduler"
	"github.com/devops-platform/devops/internal/wire"
)

// securityServer serves SecurityService: joining, renewal, tokens,
// revocation and the audit log. The interceptors (authz.go) have already
// checked who calls.
type securityServer struct {
	pb.UnimplementedSecurityServiceServer
	m *Manager
}

func (s *securityServer) secure() error {
	if s.m.sec.insecure {
		return status.Error(codes.FailedPrecondition, "the manager runs with --insecure: no tokens or certificates")
	}
	return nil
}

func (s *securityServer) JoinWorker(ctx context.Context, req *pb.JoinWorkerRequest) (*pb.JoinWorkerResponse, error) {
	if err := s.secure(); err != nil {
		return nil, err
	}
	if _, err := s.m.sec.tokens.Authenticate(req.GetToken(), true); err != nil {
		if errors.Is(err, auth.ErrWrongKind) {
			return nil, status.Error(codes.Unauthenticated, "join: an API token cannot join a worker: use a join token (devops token create --role worker)")
		}
		return nil, status.Errorf(codes.Unauthenticated, "join: %v", err)
	}
	gen, err := s.m.sec.tokens.WorkerGeneration(req.GetName())
	if err != nil {
		return nil, status.Errorf(codes.PermissionDenied, "join: worker %s is revoked (devops workers revoke --undo %s admits it again)", req.GetName(), req.GetName())
	}
	return s.issue(req.GetName(), gen, req.GetCsr())
}

func (s *securityServer) RenewCertificate(ctx context.Context, req *pb.RenewCertificateRequest) (*pb.RenewCertificateResponse, error) {
	if err := s.secure(); err != nil {
		return nil, err
	}
	p := principalFrom(ctx)
	gen, err := s.m.sec.tokens.WorkerGeneration(p.worker)
	if err != nil {
		return nil, status.Errorf(codes.PermissionDenied, "renew: worker %s: %v", p.worker, err)
	}
	resp, err := s.issue(p.worker, gen, req.GetCsr())
	if err != nil {
		return nil, err
	}
	return &pb.RenewCertificateResponse{CertificatePem: resp.CertificatePem, CaPem: resp.CaPem}, nil
}

// issue signs a worker certificate for name, of generation gen (see
// auth.Store.WorkerGeneration).
func (s *securityServer) issue(name string, gen int, csrDER []byte) (*pb.JoinWorkerResponse, error) {
	csr, err := pki.ParseRequest(csrDER)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	cert, err := s.m.sec.ca.Issue(csr.PublicKey, pki.Leaf{CommonName: name, Role: pki.RoleWorker, Hosts: []string{name}, TTL: s.m.sec.certTTL, Generation: gen})
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	s.m.log.Info("worker certificate issued", "worker", name, "serial", pki.SerialString(cert), "not_after", cert.NotAfter)
	return &pb.JoinWorkerResponse{CertificatePem: pki.EncodeCert(cert), CaPem: s.m.sec.ca.PEM()}, nil
}

func tokenToPB(t auth.Token) *pb.Token {
	out := &pb.Token{Id: t.ID, Role: string(t.Role), Scope: t.Scope, Description: t.Description,
		CreatedAt: timestamppb.New(t.CreatedAt), Revoked: t.Revoked, CreatedBy: t.CreatedBy}
	if !t.ExpiresAt.IsZero() {
		out.ExpiresAt = timestamppb.New(t.ExpiresAt)
	}
	return out
}

func (s *securityServer) CreateToken(ctx context.Context, req *pb.CreateTokenRequest) (*pb.CreateTokenResponse, error) {
	if err := s.secure(); err != nil {
		return nil, err
	}
	role, err := auth.ParseRole(req.GetRole())
	if err != nil {
		return nil, toStatus(err)
	}
	if req.GetScope() != "" {
		if role == auth.Worker || role == auth.Admin {
			return nil, status.Errorf(codes.InvalidArgument, "a %s token cannot be scoped", role)
		}
		if _, err := scheduler.ParseSelector(req.GetScope()); err != nil {
			return nil, toStatus(err)
		}
	}
	t, str, err := s.m.sec.tokens.Create(auth.NewToken{Role: role, Scope: req.GetScope(), Description: req.GetDescription(),
		CreatedBy: principalFrom(ctx).name, TTL: wire.FromDuration(req.GetTtl()), CAHash: s.m.sec.ca.Hash()})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.CreateTokenResponse{Token: tokenToPB(t), Secret: str}, nil
}

func (s *securityServer) ListTokens(ctx context.Context, req *pb.ListTokensRequest) (*pb.ListTokensResponse, error) {
	if err := s.secure(); err != nil {
		return nil, err
	}
	resp := &pb.ListTokensResponse{}
	for _, t := range s.m.sec.tokens.List() {
		resp.Tokens = append(resp.Tokens, tokenToPB(t))
	}
	return resp, nil
}

func (s *securityServer) RevokeToken(ctx context.Context, req *pb.RevokeTokenRequest) (*pb.RevokeTokenResponse, error) {
	if err := s.secure(); err != nil {
		return nil, err
	}
	t, err := s.m.sec.tokens.Revoke(req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.RevokeTokenResponse{Token: tokenToPB(t)}, nil
}

// RevokeWorker denies the worker's certificates and name, and cuts the
// manager's connection to it at once: the worker is DOWN and what it ran is
// DISCONNECTED, then LOST after the grace.
func (s *securityServer) RevokeWorker(ctx context.Context, req *pb.RevokeWorkerRequest) (*pb.RevokeWorkerResponse, error) {
	if err := s.secure(); err != nil {
		return nil, err
	}
	name := req.GetWorker()
	w, err := s.m.registry.Get(name)
	if err == nil {
		name = w.Name
	} else if !req.GetUndo() {
		return nil, toStatus(err)
	}
	if req.GetUndo() {
		if err := s.m.sec.tokens.AdmitWorker(name); err != nil {
			return nil, toStatus(err)
		}
		return &pb.RevokeWorkerResponse{Worker: name}, nil
	}
	if err := s.m.sec.tokens.RevokeWorker(name); err != nil {
		return nil, toStatus(err)
	}
	s.m.cutOff(w.ID)
	s.m.log.Warn("worker revoked", "worker", name, "worker_id", w.ID)
	return &pb.RevokeWorkerResponse{Worker: name}, nil
}

// cutOff closes the manager's connection to a worker, ends what its
// ReportStatus stream says (the stream fails at its next message) and marks
// it DOWN.
func (m *Manager) cutOff(id devops.WorkerID) {
	m.workers.cut(id)
	m.registry.MarkDown(id)
}

func (s *securityServer) ListAudit(ctx context.Context, req *pb.ListAuditRequest) (*pb.ListAuditResponse, error) {
	n := int(req.GetLimit())
	if n <= 0 {
		n = 100
	}
	es, err := s.m.sec.audit.Tail(min(n, maxAuditEntries))
	if err != nil {
		return nil, toStatus(err)
	}
	// The newest first, as long as they fit a page (pages.go): refused calls
	// are audited too, so anyone who can reach the manager could otherwise
	// write entries enough to make the answer fail.
	slices.Reverse(es)
	page, _ := fillPage(es, maxAuditEntries, func(e audit.Entry) *pb.AuditEntry {
		return &pb.AuditEntry{Time: timestamppb.New(e.Time), Principal: e.Principal, Role: e.Role,
			Action: e.Action, Argv: e.Argv, Stdin: e.Stdin, Workers: e.Workers, Target: e.Target, Result: e.Result, Peer: e.Peer}
	})
	slices.Reverse(page)
	return &pb.ListAuditResponse{Entries: page, LeftOut: int32(len(es) - len(page))}, nil
}

// maxAuditEntries bounds how many entries one ListAudit answers.
const maxAuditEntries = 10_000

func (s *securityServer) WhoAmI(ctx context.Context, req *pb.WhoAmIRequest) (*pb.WhoAmIResponse, error) {
	p := principalFrom(ctx)
	return &pb.WhoAmIResponse{Principal: p.name, Role: string(p.role), Scope: p.scope.String()}, nil
}
