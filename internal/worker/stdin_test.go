package worker

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/devops-platform/devops/api/devops/v1"
)

// putStdinCall is a PutStdin call as the manager makes it, its messages
// given ahead.
type putStdinCall struct {
	grpc.ServerStream
	msgs     []*pb.PutStdinRequest
	answered bool
}

func (c *putStdinCall) Recv() (*pb.PutStdinRequest, error) {
	if len(c.msgs) == 0 {
		return nil, io.EOF
	}
	m := c.msgs[0]
	c.msgs = c.msgs[1:]
	return m, nil
}

func (c *putStdinCall) SendAndClose(*pb.PutStdinResponse) error {
	c.answered = true
	return nil
}

// TestPutStdinStagesTheInput: a large input comes ahead of its command and
// waits whole in the spool's .stdin; a short, long or misnamed one is
// refused and leaves nothing; one for a process the worker started
// already is not written again; one left an hour goes.
func TestPutStdinStagesTheInput(t *testing.T) {
	dir := t.TempDir()
	w, err := New(Config{
		DataDir: dir, Listen: "127.0.0.1:0", HTTP: "-", WarmShims: -1, InitPath: "/bin/false",
		Security: SecurityConfig{Insecure: true},
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer w.shutdown(true)
	s := &server{w: w}
	put := func(id string, size int64, chunks ...string) (*putStdinCall, error) {
		c := &putStdinCall{msgs: []*pb.PutStdinRequest{{ProcessId: id, Size: size}}}
		for _, d := range chunks {
			c.msgs = append(c.msgs, &pb.PutStdinRequest{Data: []byte(d)})
		}
		return c, s.PutStdin(c)
	}
	staging := filepath.Join(dir, "spool", ".stdin")

	if c, err := put("p1", 5, "ab", "cde"); err != nil || !c.answered {
		t.Fatalf("PutStdin of 5 bytes: %v (answered %v)", err, c.answered)
	}
	path, err := w.stagedStdin("p1", 5)
	if data, rerr := os.ReadFile(path); err != nil || rerr != nil || string(data) != "abcde" {
		t.Errorf("staged input of p1: %q, %v, %v; want abcde", data, err, rerr)
	}
	if _, err := w.stagedStdin("p1", 6); err == nil {
		t.Error("a staged input of 5 bytes was taken for one of 6")
	}
	if _, err := w.stagedStdin("p9", 5); err == nil {
		t.Error("an input that never came was found")
	}

	for _, bad := range []struct {
		id     string
		size   int64
		chunks []string
	}{
		{"short", 5, []string{"abc"}},
		{"long", 2, []string{"abc"}},
		{"../escape", 3, []string{"abc"}},
		{".hidden", 3, []string{"abc"}},
		{"empty", 0, nil},
	} {
		if _, err := put(bad.id, bad.size, bad.chunks...); status.Code(err) != codes.InvalidArgument {
			t.Errorf("PutStdin %q of %d bytes with %q: %v, want InvalidArgument", bad.id, bad.size, bad.chunks, err)
		}
	}
	if ents, _ := os.ReadDir(staging); len(ents) != 1 || ents[0].Name() != "p1" {
		t.Errorf("staged after the refusals: %v, want only p1", ents)
	}

	// A process starting (or started) here has its input already.
	w.mu.Lock()
	w.starting["p2"] = make(chan struct{})
	w.mu.Unlock()
	if c, err := put("p2", 3, "abc"); err != nil || !c.answered {
		t.Errorf("PutStdin for a process starting here: %v, want an answer", err)
	}
	if _, err := os.Stat(filepath.Join(staging, "p2")); !os.IsNotExist(err) {
		t.Errorf("an input was staged for a process starting here: %v", err)
	}

	old := time.Now().Add(-stagedTTL - time.Minute)
	if err := os.Chtimes(filepath.Join(staging, "p1"), old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := put("p3", 1, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(staging, "p1")); !os.IsNotExist(err) {
		t.Errorf("an input staged over %v ago is still there: %v", stagedTTL, err)
	}
}
