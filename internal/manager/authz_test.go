package manager

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/audit"
)

// heldAudit holds every "run" entry until release is closed, as a slow
// sync of the audit log would.
type heldAudit struct {
	auditLog
	held    chan struct{} // gets a value when a run entry starts to wait
	release chan struct{}
	synced  atomic.Bool // a run entry was appended
}

func (h *heldAudit) Append(e audit.Entry) error {
	if e.Action != "run" {
		return h.auditLog.Append(e)
	}
	h.held <- struct{}{}
	<-h.release
	err := h.auditLog.Append(e)
	h.synced.Store(true)
	return err
}

// TestRunStreamsBesideTheAuditSync: a run's first answer reaches the
// client while its audit entry is still being synced, and the call ends
// only once the entry is on disk.
func TestRunStreamsBesideTheAuditSync(t *testing.T) {
	h := &heldAudit{held: make(chan struct{}, 1), release: make(chan struct{})}
	m := startManagerWith(t, Config{}, func(m *Manager) { h.auditLog, m.sec.audit = m.sec.audit, h })
	release := sync.OnceFunc(func() { close(h.release) })
	defer release() // a test that fails early must not leave the manager's stop waiting
	f := startFakeWorker(t, m, "w1")
	f.open(t, t.Context(), f.id)
	eventually(t, 5*time.Second, "worker UP", func() bool { return state(m, f.id) == devops.WorkerUp })

	conn, err := grpc.NewClient(m.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := pb.NewProcessManagementServiceClient(conn).ExecuteDistributedCommand(t.Context(),
		&pb.ExecuteDistributedCommandRequest{Spec: &pb.Spec{Argv: []string{"true"}}})
	if err != nil {
		t.Fatal(err)
	}
	type answer struct {
		resp *pb.ExecuteDistributedCommandResponse
		err  error
	}
	answers := make(chan answer, 64)
	go func() {
		for {
			resp, err := stream.Recv()
			answers <- answer{resp, err}
			if err != nil {
				return
			}
		}
	}()
	select {
	case <-h.held:
	case <-time.After(5 * time.Second):
		t.Fatal("the run's audit entry was never appended")
	}
	var id devops.ProcessID
	select {
	case a := <-answers:
		if a.err != nil {
			t.Fatalf("first answer: %v", a.err)
		}
		id = devops.ProcessID(a.resp.GetProcess().GetId())
	case <-time.After(5 * time.Second):
		t.Fatal("the first answer waited for the audit sync")
	}
	// The fake worker refuses the command: the process ends at once, and
	// only the audit entry keeps the call open.
	eventually(t, 5*time.Second, "the process ended", func() bool {
		p, err := m.Process(id)
		return err == nil && p.State.Terminal()
	})
	deadline := time.After(300 * time.Millisecond)
	for open := true; open; {
		select {
		case a := <-answers:
			if a.err != nil {
				t.Fatalf("the call ended (%v) before its audit entry was on disk", a.err)
			}
		case <-deadline:
			open = false
		}
	}
	release()
	for a := range answers {
		if a.err != nil {
			if !errors.Is(a.err, io.EOF) {
				t.Errorf("the call ended with %v", a.err)
			}
			break
		}
	}
	if !h.synced.Load() {
		t.Error("the call ended before its audit entry was on disk")
	}
}
