package manager

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/audit"
	"github.com/devops-platform/devops/internal/auth"
	"github.com/devops-platform/devops/internal/pki"
	"github.com/devops-platform/devops/internal/scheduler"
	"github.com/devops-platform/devops/internal/validate"
)

// The interceptors here are the edge of authentication and authorization:
// they answer Unauthenticated and PermissionDenied themselves (toStatus
// maps domain errors; these are not domain errors) and record every
// refusal and every action that changes something in the audit log.

// principal is who makes a call.
type principal struct {
	name  string // "token:ID", "worker:NAME" or "anonymous"
	role  auth.Role
	scope scheduler.Selector // empty: everything
	// worker is the certificate's worker name, for calls from workers.
	worker string
}

func (p principal) scoped() bool { return p.scope.String() != "" }

type principalKey struct{}

func principalFrom(ctx context.Context) principal {
	p, _ := ctx.Value(principalKey{}).(principal)
	return p
}

// caller kinds of a method.
type callerKind int

const (
	public       callerKind = iota // anyone: health, reflection, joining
	client                         // an API token
	workerCaller                   // a worker certificate
)

type rule struct {
	kind   callerKind
	perm   auth.Permission
	action string // recorded in the audit log when set ("" = reads)
	scoped bool   // a scoped token may call it (with checks below)
}

const (
	svcProc = "/devops.v1.ProcessManagementService/"
	svcReg  = "/devops.v1.WorkerRegistrationService/"
	svcSec  = "/devops.v1.SecurityService/"
)

// rules lists every method; a method missing here is refused.
var rules = map[string]rule{
	svcProc + "ExecuteDistributedCommand": {client, auth.Write, "run", true},
	svcProc + "TerminateProcess":          {client, auth.Write, "kill", true},
	svcProc + "GetProcessStatus":          {client, auth.Read, "", true},
	svcProc + "ListProcesses":             {client, auth.Read, "", true},
	svcProc + "ListWorkers":               {client, auth.Read, "", true},
	svcProc + "StreamOutput":              {client, auth.Read, "", true},
	svcProc + "DrainWorker":               {client, auth.Write, "drain", true},
	svcProc + "StartRun":                  {client, auth.Write, "fleet.start", true},
	svcProc + "GetRun":                    {client, auth.Read, "", true},
	svcProc + "ListRuns":                  {client, auth.Read, "", true},
	svcProc + "ResumeRun":                 {client, auth.Write, "fleet.resume", true},
	svcProc + "CancelRun":                 {client, auth.Write, "fleet.cancel", true},
	svcProc + "WatchRun":                  {client, auth.Read, "", true},
	svcProc + "UploadStdin":               {client, auth.Write, "stdin.upload", true},
	svcReg + "RegisterWorker":             {workerCaller, 0, "", false},
	svcReg + "DeregisterWorker":           {workerCaller, 0, "", false},
	svcReg + "ReportStatus":               {workerCaller, 0, "", false},
	svcSec + "JoinWorker":                 {public, 0, "worker.join", false},
	svcSec + "RenewCertificate":           {workerCaller, 0, "", false},
	svcSec + "CreateToken":                {client, auth.Manage, "token.create", false},
	svcSec + "ListTokens":                 {client, auth.Manage, "", false},
	svcSec + "RevokeToken":                {client, auth.Manage, "token.revoke", false},
	svcSec + "RevokeWorker":               {client, auth.Manage, "worker.revoke", false},
	svcSec + "ListAudit":                  {client, auth.Manage, "", false},
	svcSec + "WhoAmI":                     {client, auth.Read, "", true},
}

func ruleFor(method string) (rule, bool) {
	if strings.HasPrefix(method, "/grpc.health.v1.Health/") || strings.HasPrefix(method, "/grpc.reflection.") {
		return rule{kind: public}, true
	}
	r, ok := rules[method]
	return r, ok
}

// authenticate finds who calls and checks that they may call method.
func (m *Manager) authenticate(ctx context.Context, method string) (principal, rule, error) {
	r, ok := ruleFor(method)
	if m.sec.insecure {
		return principal{name: "anonymous", role: auth.Admin}, r, nil
	}
	if !ok {
		return principal{name: "anonymous"}, r, status.Errorf(codes.PermissionDenied, "%s is not allowed", method)
	}
	switch r.kind {
	case public:
		return principal{name: "anonymous"}, r, nil
	case workerCaller:
		leaf := peerCert(ctx)
		if leaf == nil || pki.Role(leaf) != pki.RoleWorker {
			return principal{name: "anonymous"}, r, status.Error(codes.Unauthenticated, "this call needs a worker certificate: join with a join token first")
		}
		p := principal{name: "worker:" + leaf.Subject.CommonName, role: auth.Worker, worker: leaf.Subject.CommonName}
		if err := m.sec.tokens.CheckWorker(p.worker, pki.Generation(leaf)); err != nil {
			return p, r, status.Errorf(codes.PermissionDenied, "worker %s: %v", p.worker, err)
		}
		return p, r, nil
	}
	tok, err := m.sec.tokens.Authenticate(bearer(ctx), false)
	if err != nil {
		msg := "authentication: " + err.Error()
		switch {
		case errors.Is(err, auth.ErrNoToken):
			msg = "authentication required: no API token (set DEVOPS_TOKEN, --token-file or run `devops login`)"
		case errors.Is(err, auth.ErrWrongKind):
			msg = "authentication: a join token cannot be used as an API token"
		}
		return principal{name: "anonymous"}, r, status.Error(codes.Unauthenticated, msg)
	}
	p := principal{name: "token:" + tok.ID, role: tok.Role}
	if tok.Scope != "" {
		if p.scope, err = scheduler.ParseSelector(tok.Scope); err != nil {
			return p, r, status.Errorf(codes.PermissionDenied, "token scope %q: %v", tok.Scope, err)
		}
	}
	if !tok.Role.Allows(r.perm) {
		return p, r, status.Errorf(codes.PermissionDenied, "role %s may not %s (%s)", tok.Role, r.perm, method[strings.LastIndex(method, "/")+1:])
	}
	if p.scoped() && !r.scoped {
		return p, r, status.Errorf(codes.PermissionDenied, "a token scoped to %q may not call %s", tok.Scope, method[strings.LastIndex(method, "/")+1:])
	}
	return p, r, nil
}

func bearer(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
	}
	return ""
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

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// record appends to the audit log; a failure is logged, not returned: the
// action has happened.
func (m *Manager) record(ctx context.Context, p principal, action string, e audit.Entry, err error) {
	e.Principal, e.Role, e.Action, e.Peer = p.name, string(p.role), action, peerAddr(ctx)
	e.Result = "ok"
	if err != nil {
		s := status.Convert(err)
		e.Result = s.Code().String() + ": " + s.Message()
	}
	if aerr := m.sec.audit.Append(e); aerr != nil {
		m.log.Error("audit", "action", action, "err", aerr)
	}
}

func (m *Manager) authUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	p, r, err := m.authenticate(ctx, info.FullMethod)
	if err != nil {
		m.record(ctx, p, actionOr(r.action, info.FullMethod), describeRequest(req), err)
		return nil, err
	}
	ctx = context.WithValue(ctx, principalKey{}, p)
	if err := validate.Request(req); err != nil {
		err = status.Error(codes.InvalidArgument, err.Error())
		if r.action != "" {
			m.record(ctx, p, r.action, describeRequest(req), err)
		}
		return nil, err
	}
	entry := describeRequest(req)
	if err := m.checkScope(ctx, p, req, &entry); err != nil {
		m.record(ctx, p, actionOr(r.action, info.FullMethod), entry, err)
		return nil, err
	}
	if info.FullMethod == svcProc+"StartRun" && !m.sec.runLimit.Allow(p.limitKey(ctx)) {
		err := status.Error(codes.ResourceExhausted, "too many run requests: slow down")
		m.record(ctx, p, r.action, entry, err)
		return nil, err
	}
	if info.FullMethod == svcReg+"RegisterWorker" && !m.sec.insecure {
		if name := req.(*pb.RegisterWorkerRequest).GetName(); name != p.worker {
			err := status.Errorf(codes.PermissionDenied, "worker certificate is for %q, not %q", p.worker, name)
			m.record(ctx, p, "worker.register", entry, err)
			return nil, err
		}
	}
	resp, err := handler(ctx, req)
	if err == nil && p.scoped() {
		filterResponse(m, p, resp)
	}
	if r.action != "" {
		m.record(ctx, p, r.action, entry, err)
	}
	return resp, err
}

// speaksFor checks that the caller is worker w: a worker certificate
// speaks only for the worker it was issued to (ReportStatus and
// DeregisterWorker say which worker by id, so the certificate's name must
// be that worker's). Refusals are recorded in the audit log as action.
func (m *Manager) speaksFor(ctx context.Context, w devops.Worker, action string) error {
	if m.sec.insecure {
		return nil
	}
	p := principalFrom(ctx)
	if p.worker == w.Name {
		return nil
	}
	err := status.Errorf(codes.PermissionDenied, "worker certificate is for %q, not %q", p.worker, w.Name)
	m.record(ctx, p, action, audit.Entry{Workers: []string{w.Name}}, err)
	return err
}

func (p principal) limitKey(ctx context.Context) string {
	if p.name != "anonymous" {
		return p.name
	}
	host := peerAddr(ctx)
	if i := strings.LastIndex(host, ":"); i > 0 {
		host = host[:i]
	}
	return "peer:" + host
}

func actionOr(action, method string) string {
	if action != "" {
		return action
	}
	return "call " + method[strings.LastIndex(method, "/")+1:]
}

// describeStdin is what the audit log keeps of a command's standard input:
// enough to tell which script ran (`sh` alone says little), not its bytes,
// which may hold secrets.
func describeStdin(s *pb.Spec) string {
	if u := s.GetStdinUpload(); u != "" {
		// Its id is its SHA-256; its upload's entry says how long it is.
		return "an upload, sha256 " + u
	}
	if len(s.GetStdin()) == 0 {
		return ""
	}
	return fmt.Sprintf("%d bytes, sha256 %x", len(s.GetStdin()), sha256.Sum256(s.GetStdin()))
}

// describeRequest is what the audit log keeps of a request. It never
// keeps environment values.
func describeRequest(req any) audit.Entry {
	switch r := req.(type) {
	case *pb.ExecuteDistributedCommandRequest:
		e := audit.Entry{Argv: r.GetSpec().GetArgv(), Stdin: describeStdin(r.GetSpec()), Target: describeTarget(r.GetTarget())}
		if w := r.GetTarget().GetWorker(); w != "" {
			e.Workers = []string{w}
		}
		return e
	case *pb.TerminateProcessRequest:
		return audit.Entry{Target: "process " + r.GetProcessId()}
	case *pb.GetProcessStatusRequest:
		return audit.Entry{Target: "process " + r.GetProcessId()}
	case *pb.StreamOutputRequest:
		return audit.Entry{Target: "process " + r.GetProcessId()}
	case *pb.DrainWorkerRequest:
		return audit.Entry{Workers: []string{r.GetWorker()}, Target: fmt.Sprintf("undo=%v", r.GetUndo())}
	case *pb.StartRunRequest:
		t := r.GetTarget()
		return audit.Entry{Argv: r.GetSpec().GetArgv(), Stdin: describeStdin(r.GetSpec()), Workers: t.GetWorkers(),
			Target: fmt.Sprintf("selector=%q all=%v exclude=%q dry_run=%v", t.GetSelector(), t.GetAll(), strings.Join(t.GetExclude(), ","), r.GetDryRun())}
	case *pb.CancelRunRequest:
		return audit.Entry{Target: "run " + r.GetRunId()}
	case *pb.ResumeRunRequest:
		return audit.Entry{Target: "run " + r.GetRunId()}
	case *pb.CreateTokenRequest:
		return audit.Entry{Target: fmt.Sprintf("role=%s scope=%q ttl=%v", r.GetRole(), r.GetScope(), r.GetTtl().AsDuration())}
	case *pb.RevokeTokenRequest:
		return audit.Entry{Target: "token " + r.GetId()}
	case *pb.RevokeWorkerRequest:
		return audit.Entry{Workers: []string{r.GetWorker()}, Target: fmt.Sprintf("undo=%v", r.GetUndo())}
	case *pb.JoinWorkerRequest:
		return audit.Entry{Workers: []string{r.GetName()}}
	case *pb.RegisterWorkerRequest:
		return audit.Entry{Workers: []string{r.GetName()}, Target: r.GetAddress()}
	}
	return audit.Entry{}
}

func describeTarget(t *pb.Target) string {
	switch {
	case t.GetWorker() != "":
		return "worker " + t.GetWorker()
	case t.GetAll():
		return "all"
	case t.GetSelector() != "":
		return "selector " + t.GetSelector()
	}
	return "any worker"
}

// inScope reports whether a worker (name or id) is within p's scope.
func (m *Manager) inScope(p principal, worker string) bool {
	if !p.scoped() {
		return true
	}
	w, err := m.registry.Get(worker)
	return err == nil && p.scope.Matches(w.Labels)
}

// processInScope reports whether a process's worker is within p's scope.
func (m *Manager) processInScope(p principal, pr devops.Process) bool {
	return !p.scoped() || (pr.WorkerID != "" && m.inScope(p, string(pr.WorkerID)))
}

// checkScope refuses what a scoped principal may not reach, and narrows
// run targets to the scope. It fills e.Workers with the workers reached.
func (m *Manager) checkScope(ctx context.Context, p principal, req any, e *audit.Entry) error {
	if !p.scoped() {
		return nil
	}
	scope := p.scope.String()
	outOfScope := func(what string) error {
		return status.Errorf(codes.PermissionDenied, "%s is outside this token's scope %q", what, scope)
	}
	hidden := func(id string) error {
		// As if it did not exist: a scoped token cannot even see it.
		return status.Errorf(codes.NotFound, "process %s: %v", id, devops.ErrNotFound)
	}
	processOK := func(id string) bool {
		pr, err := m.Process(devops.ProcessID(id))
		return err == nil && m.processInScope(p, pr)
	}
	switch r := req.(type) {
	case *pb.ExecuteDistributedCommandRequest:
		t := r.GetTarget()
		if t == nil {
			t = &pb.Target{}
			r.Target = t
		}
		switch {
		case t.GetWorker() != "":
			if !m.inScope(p, t.GetWorker()) {
				return outOfScope("worker " + t.GetWorker())
			}
		case t.GetAll() || t.GetSelector() != "":
			// Both must match: selectors joined by commas are ANDed.
			t.Selector = strings.Trim(scope+","+t.GetSelector(), ",")
			t.All = false
		default:
			// One worker, the least loaded of those in scope.
			ws, err := scheduler.Match(m.registry.Snapshot(), p.scope)
			if err != nil {
				return status.Errorf(codes.FailedPrecondition, "no worker in scope %q: %v", scope, err)
			}
			best := ws[0]
			for _, w := range ws[1:] {
				if w.Capacity-w.Running > best.Capacity-best.Running {
					best = w
				}
			}
			t.Worker = best.Name
		}
		e.Target = describeTarget(t)
	case *pb.TerminateProcessRequest:
		if !processOK(r.GetProcessId()) {
			return hidden(r.GetProcessId())
		}
	case *pb.GetProcessStatusRequest:
		if !processOK(r.GetProcessId()) {
			return hidden(r.GetProcessId())
		}
	case *pb.StreamOutputRequest:
		if !processOK(r.GetProcessId()) {
			return hidden(r.GetProcessId())
		}
	case *pb.DrainWorkerRequest:
		if !m.inScope(p, r.GetWorker()) {
			return outOfScope("worker " + r.GetWorker())
		}
	case *pb.ListProcessesRequest:
		if w := r.GetWorker(); w != "" && !m.inScope(p, w) {
			return outOfScope("worker " + w)
		}
	case *pb.StartRunRequest:
		t := r.GetTarget()
		if t == nil {
			t = &pb.RunTarget{}
			r.Target = t
		}
		for _, w := range t.GetWorkers() {
			if !m.inScope(p, w) {
				return outOfScope("worker " + w)
			}
		}
		if len(t.GetWorkers()) == 0 {
			t.Selector = strings.Trim(scope+","+t.GetSelector(), ",")
			t.All = false
		}
	case *pb.GetRunRequest:
		return m.runInScope(p, r.GetRunId())
	case *pb.WatchRunRequest:
		return m.runInScope(p, r.GetRunId())
	case *pb.CancelRunRequest:
		return m.runInScope(p, r.GetRunId())
	case *pb.ResumeRunRequest:
		return m.runInScope(p, r.GetRunId())
	}
	return nil
}

// runInScope answers NotFound, as if it did not exist, for a fleet run
// that reaches a worker outside p's scope.
func (m *Manager) runInScope(p principal, id string) error {
	r, err := m.FleetRun(devops.RunID(id))
	if err != nil || !m.runVisible(p, r) {
		return status.Errorf(codes.NotFound, "run %s: %v", id, devops.ErrNotFound)
	}
	return nil
}

func (m *Manager) runVisible(p principal, r devops.Run) bool {
	for _, t := range r.Tasks {
		if !m.inScope(p, string(t.WorkerID)) {
			return false
		}
	}
	return true
}

// filterResponse drops what a scoped principal may not see from a list.
func filterResponse(m *Manager, p principal, resp any) {
	switch r := resp.(type) {
	case *pb.ListWorkersResponse:
		kept := r.Workers[:0]
		for _, w := range r.Workers {
			if p.scope.Matches(w.GetLabels()) {
				kept = append(kept, w)
			}
		}
		r.Workers = kept
	case *pb.ListRunsResponse:
		kept := r.Runs[:0]
		for _, run := range r.Runs {
			if fr, err := m.FleetRun(devops.RunID(run.GetId())); err == nil && m.runVisible(p, fr) {
				kept = append(kept, run)
			}
		}
		r.Runs = kept
	case *pb.ListProcessesResponse:
		kept := r.Processes[:0]
		for _, pr := range r.Processes {
			if pr.GetWorkerId() != "" && m.inScope(p, pr.GetWorkerId()) {
				kept = append(kept, pr)
			}
		}
		r.Processes = kept
	}
}

// authStream authenticates a stream and, for run requests, narrows the
// target, applies the rate limit and records the action once the request
// is read.
//
// Its frame stays on the stack under the handler for as long as the
// stream lives, under every worker's parked status stream too (see
// reportStatus), so it holds only what it passes on: the work is in
// streamCaller and authStream.serve.
func (m *Manager) authStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ss, err := m.streamCaller(ss, info.FullMethod)
	if err != nil {
		return err
	}
	if as, ok := ss.(*authStream); ok {
		return as.serve(srv, handler)
	}
	return handler(srv, ss)
}

// streamCaller authenticates a stream and returns it with its caller in
// its context: a worker's as a workerStream, a client's as an authStream.
func (m *Manager) streamCaller(ss grpc.ServerStream, method string) (grpc.ServerStream, error) {
	ctx := ss.Context()
	p, r, err := m.authenticate(ctx, method)
	if err != nil {
		m.record(ctx, p, actionOr(r.action, method), audit.Entry{}, err)
		return nil, err
	}
	ctx = context.WithValue(ctx, principalKey{}, p)
	if r.kind == workerCaller {
		// A worker's stream (ReportStatus) carries no client request to
		// check, scope or record, and a message every few seconds: its
		// handler checks the worker's identity (speaksFor).
		return workerStream{ss, ctx}, nil
	}
	return &authStream{ServerStream: ss, m: m, p: p, r: r, ctx: ctx, method: method}, nil
}

// serve runs a client's stream and records the action once it ends, if
// no answer recorded it before.
func (s *authStream) serve(srv any, handler grpc.StreamHandler) error {
	err := handler(srv, s)
	if s.recorded != nil {
		// The call returns once its entry is on disk, as a unary one does.
		<-s.recorded
	} else if s.r.action != "" {
		s.m.record(s.ctx, s.p, s.r.action, s.entry, err)
	}
	return err
}

// workerStream is a worker's stream with its principal in the context.
type workerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s workerStream) Context() context.Context { return s.ctx }

type authStream struct {
	grpc.ServerStream
	m      *Manager
	p      principal
	r      rule
	ctx    context.Context
	method string
	// Touched only by the handler's goroutine:
	entry audit.Entry
	// recorded is closed once the accepted request is in the audit log;
	// nil until the first answer.
	recorded chan struct{}
}

func (s *authStream) Context() context.Context { return s.ctx }

func (s *authStream) RecvMsg(msg any) error {
	if err := s.ServerStream.RecvMsg(msg); err != nil {
		return err
	}
	if err := validate.Request(msg); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	s.entry = describeRequest(msg)
	if err := s.m.checkScope(s.ctx, s.p, msg, &s.entry); err != nil {
		return err
	}
	if req, ok := msg.(*pb.ExecuteDistributedCommandRequest); ok {
		s.entry.Workers = s.m.targetWorkers(req.GetTarget())
	}
	if s.method == svcProc+"ExecuteDistributedCommand" && !s.m.sec.runLimit.Allow(s.p.limitKey(s.ctx)) {
		return status.Error(codes.ResourceExhausted, "too many run requests: slow down")
	}
	return nil
}

func (s *authStream) SendMsg(msg any) error {
	if up, ok := msg.(*pb.UploadStdinResponse); ok {
		s.entry.Stdin = fmt.Sprintf("%d bytes, sha256 %s", up.GetSize(), up.GetUploadId())
	}
	if s.r.action != "" && s.recorded == nil {
		// The first answer means the request was accepted: record it now
		// rather than when a long follow ends. The sync runs beside the
		// stream, not before its first message: the command is on its way
		// to the worker already, and a slow sync (up to 32 ms on the AMD
		// VM while the shims sync and discard; 0.7 ms at the median) held
		// the first output byte back by as much. The handler waits for it
		// before the call ends.
		if ev, ok := msg.(*pb.ExecuteDistributedCommandResponse); ok && ev.GetProcess() != nil {
			if len(s.entry.Workers) == 0 && ev.GetProcess().GetWorkerName() != "" {
				s.entry.Workers = []string{ev.GetProcess().GetWorkerName()}
			}
		}
		done, entry := make(chan struct{}), s.entry
		s.recorded = done
		go func() {
			defer close(done)
			s.m.record(s.ctx, s.p, s.r.action, entry, nil)
		}()
	}
	if s.p.scoped() {
		if hide := s.hidden(msg); hide {
			return nil
		}
	}
	return s.ServerStream.SendMsg(msg)
}

// hidden reports whether a streamed event concerns a process out of scope.
func (s *authStream) hidden(msg any) bool {
	var pr *pb.Process
	switch ev := msg.(type) {
	case *pb.ExecuteDistributedCommandResponse:
		pr = ev.GetProcess()
	case *pb.StreamOutputResponse:
		pr = ev.GetProcess()
	case *pb.WatchRunResponse:
		return false // the run was checked in RecvMsg
	}
	return pr != nil && pr.GetWorkerId() != "" && !s.m.inScope(s.p, pr.GetWorkerId())
}

// targetWorkers names the workers a run target reaches now, for the audit
// log; nil when the scheduler picks later.
func (m *Manager) targetWorkers(t *pb.Target) []string {
	if t.GetWorker() != "" {
		return []string{t.GetWorker()}
	}
	if !t.GetAll() && t.GetSelector() == "" {
		return nil
	}
	sel, err := scheduler.ParseSelector(t.GetSelector())
	if err != nil {
		return nil
	}
	ws, _ := scheduler.Match(m.registry.Snapshot(), sel)
	names := make([]string, len(ws))
	for i, w := range ws {
		names[i] = w.Name
	}
	return names
}
