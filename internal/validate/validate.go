// Package validate checks every request the manager accepts, in one place:
// sizes of argv and environment, names, labels and selectors, offsets and
// durations. The manager's interceptor calls Request before any handler; it
// wraps devops.ErrInvalid. It must not import internal/manager.
package validate

import (
	"fmt"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/scheduler"
)

// Limits on request fields. The gRPC message size (8 MiB) bounds a request
// as a whole; these keep any one field sane.
const (
	MaxArgs        = 4096
	MaxArgvBytes   = 1 << 20 // all of argv together
	MaxEnv         = 1024
	MaxEnvBytes    = 1 << 20 // all names and values together
	MaxName        = 253     // worker names, ids, keys
	MaxSelector    = 1024
	MaxPath        = 4096
	MaxDuration    = 365 * 24 * time.Hour
	MaxWorkerNames = 10000
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{devops.ErrInvalid}, args...)...)
}

// Name checks a worker name, id, process id or key: printable, no spaces,
// at most MaxName bytes. Empty is allowed (callers say when it is required).
func Name(what, s string) error {
	if len(s) > MaxName {
		return invalid("%s longer than %d bytes", what, MaxName)
	}
	for _, c := range s {
		if c <= ' ' || c == 0x7f || c == utf8.RuneError {
			return invalid("%s %q: control characters and spaces are not allowed", what, s)
		}
	}
	return nil
}

// Selector checks a label selector.
func Selector(s string) error {
	if len(s) > MaxSelector {
		return invalid("selector longer than %d bytes", MaxSelector)
	}
	_, err := scheduler.ParseSelector(s)
	return err
}

// Duration checks an optional duration: not negative, not absurd.
func Duration(what string, d *durationpb.Duration) error {
	if d == nil {
		return nil
	}
	if err := d.CheckValid(); err != nil {
		return invalid("%s: %v", what, err)
	}
	if v := d.AsDuration(); v < 0 || v > MaxDuration {
		return invalid("%s %v: want between 0 and %v", what, v, MaxDuration)
	}
	return nil
}

// Spec checks a command spec.
func Spec(s *pb.Spec) error {
	if s == nil || len(s.GetArgv()) == 0 || s.GetArgv()[0] == "" {
		return invalid("empty command")
	}
	if len(s.GetArgv()) > MaxArgs {
		return invalid("%d arguments: at most %d", len(s.GetArgv()), MaxArgs)
	}
	n := 0
	for _, a := range s.GetArgv() {
		n += len(a)
		if strings.IndexByte(a, 0) >= 0 {
			return invalid("an argument contains a NUL byte")
		}
	}
	if n > MaxArgvBytes {
		return invalid("arguments total %d bytes: at most %d", n, MaxArgvBytes)
	}
	if len(s.GetEnv()) > MaxEnv {
		return invalid("%d environment variables: at most %d", len(s.GetEnv()), MaxEnv)
	}
	n = 0
	for k, v := range s.GetEnv() {
		n += len(k) + len(v)
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return invalid("environment variable name %q", k)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return invalid("environment variable %s contains a NUL byte", k)
		}
	}
	if n > MaxEnvBytes {
		return invalid("environment totals %d bytes: at most %d", n, MaxEnvBytes)
	}
	for _, k := range s.GetSecretEnvKeys() {
		if _, ok := s.GetEnv()[k]; !ok {
			return invalid("secret environment variable %q is not in the environment", k)
		}
	}
	if len(s.GetDir()) > MaxPath || strings.IndexByte(s.GetDir(), 0) >= 0 {
		return invalid("bad working directory")
	}
	if d := s.GetDir(); d != "" && !path.IsAbs(d) {
		// Refused here, before a record exists: each worker refused it,
		// and the process was stored FAILED "on" one of them. path, not
		// filepath: it names a directory on a worker, a Unix system.
		return invalid("working directory %q is not an absolute path", d)
	}
	if err := Name("user", s.GetUser()); err != nil {
		return err
	}
	// Before the audit log names it (the manager checks it is an upload's
	// id when it takes the request).
	if err := Name("standard input upload", s.GetStdinUpload()); err != nil {
		return err
	}
	if err := Duration("timeout", s.GetTimeout()); err != nil {
		return err
	}
	if err := Duration("grace", s.GetGrace()); err != nil {
		return err
	}
	if l := s.GetLimits(); l != nil {
		if l.GetMemoryBytes() < 0 || l.GetPids() < 0 || l.GetMaxOutputBytes() < 0 || l.GetCpus() < 0 || l.GetCpus() > 1<<16 {
			return invalid("negative or absurd limit")
		}
		if m := l.GetMemoryBytes(); m > 0 && m < devops.MinMemory {
			return invalid("memory limit of %d bytes: at least 1 MiB (a number without a unit is bytes: 256M is 256 MiB)", m)
		}
	}
	return nil
}

// Request checks any request message; messages it does not know pass.
func Request(req any) error {
	switch r := req.(type) {
	case *pb.ExecuteDistributedCommandRequest:
		if err := Spec(r.GetSpec()); err != nil {
			return err
		}
		t := r.GetTarget()
		if err := Name("worker", t.GetWorker()); err != nil {
			return err
		}
		if err := Selector(t.GetSelector()); err != nil {
			return err
		}
		if err := Name("idempotency key", r.GetIdempotencyKey()); err != nil {
			return err
		}
		if err := Duration("queue timeout", r.GetQueueTimeout()); err != nil {
			return err
		}
		return Duration("disconnect grace", r.GetDisconnectGrace())
	case *pb.StartRunRequest:
		if err := Spec(r.GetSpec()); err != nil {
			return err
		}
		if err := Selector(r.GetTarget().GetSelector()); err != nil {
			return err
		}
		for _, names := range [][]string{r.GetTarget().GetWorkers(), r.GetTarget().GetExclude()} {
			if len(names) > MaxWorkerNames {
				return invalid("too many workers")
			}
			for _, w := range names {
				if err := Name("worker", w); err != nil {
					return err
				}
			}
		}
		if n := r.GetOptions().GetRetries(); n < 0 || n > devops.MaxRetries {
			return invalid("retries %d: want 0 to %d", n, devops.MaxRetries)
		}
		if err := Duration("queue timeout", r.GetQueueTimeout()); err != nil {
			return err
		}
		return Duration("disconnect grace", r.GetDisconnectGrace())
	case *pb.TerminateProcessRequest:
		if r.GetSignal() < 0 || r.GetSignal() > 64 {
			return invalid("signal %d", r.GetSignal())
		}
		if err := Duration("grace", r.GetGrace()); err != nil {
			return err
		}
		return Name("process id", r.GetProcessId())
	case *pb.GetProcessStatusRequest:
		return Name("process id", r.GetProcessId())
	case *pb.StreamOutputRequest:
		if r.GetFromOffset() < 0 {
			return invalid("negative offset %d", r.GetFromOffset())
		}
		return Name("process id", r.GetProcessId())
	case *pb.ListProcessesRequest:
		return Name("worker", r.GetWorker())
	case *pb.DrainWorkerRequest:
		return Name("worker", r.GetWorker())
	case *pb.RegisterWorkerRequest:
		if r.GetName() == "" {
			return invalid("empty worker name")
		}
		if err := Name("worker name", r.GetName()); err != nil {
			return err
		}
		if len(r.GetLabels()) > 64 {
			return invalid("more than 64 labels")
		}
		if err := scheduler.ValidateLabels(r.GetLabels()); err != nil {
			return err
		}
		if r.GetCapacity() < 0 || r.GetCapacity() > 1<<16 {
			return invalid("capacity %d", r.GetCapacity())
		}
		return Name("address", r.GetAddress())
	case *pb.JoinWorkerRequest:
		if r.GetName() == "" {
			return invalid("empty worker name")
		}
		if len(r.GetCsr()) > 16<<10 {
			return invalid("certificate request too large")
		}
		return Name("worker name", r.GetName())
	case *pb.CreateTokenRequest:
		if err := Selector(r.GetScope()); err != nil {
			return err
		}
		if len(r.GetDescription()) > 256 {
			return invalid("description longer than 256 bytes")
		}
		return Duration("ttl", r.GetTtl())
	case *pb.RevokeTokenRequest:
		return Name("token id", r.GetId())
	case *pb.RevokeWorkerRequest:
		return Name("worker", r.GetWorker())
	case *pb.ListAuditRequest:
		if r.GetLimit() < 0 || r.GetLimit() > 100000 {
			return invalid("limit %d", r.GetLimit())
		}
	}
	return nil
}
