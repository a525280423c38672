package worker

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
)

// A standard input larger than a request may carry (devops.MaxStdin) comes
// apart, ahead of its ExecuteCommand (PutStdin): it waits in
// <data-dir>/spool/.stdin/<process id> until the executor moves it into
// the process's directory. The dot keeps adopt from taking the directory
// for a process's.

// stagedTTL is how long a staged input waits for its command: the manager
// sends the command right after the input, so one still there an hour on
// belongs to a command that went elsewhere.
const stagedTTL = time.Hour

func (w *Worker) stagedDir() string { return filepath.Join(w.spoolDir, ".stdin") }

func (w *Worker) stagedPath(id devops.ProcessID) string {
	return filepath.Join(w.stagedDir(), string(id))
}

// PutStdin stages a process's standard input; the first message names the
// process and the size. A process this worker started already has its
// input: the call then writes nothing.
func (s *server) PutStdin(stream pb.WorkerProcessService_PutStdinServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	id, size := devops.ProcessID(first.GetProcessId()), first.GetSize()
	if id == "" || strings.ContainsAny(string(id), "/\x00") || strings.HasPrefix(string(id), ".") {
		return status.Errorf(codes.InvalidArgument, "process id %q", id)
	}
	if size <= 0 {
		return status.Errorf(codes.InvalidArgument, "standard input of %d bytes", size)
	}
	if s.w.known(id) {
		return stream.SendAndClose(&pb.PutStdinResponse{})
	}
	s.w.pruneStaged()
	path := s.w.stagedPath(id)
	if err := os.MkdirAll(s.w.stagedDir(), 0o700); err != nil {
		return status.Errorf(codes.Internal, "create the staging directory: %v", err)
	}
	f, err := os.CreateTemp(s.w.stagedDir(), "."+string(id)+"-")
	if err != nil {
		return status.Errorf(codes.Internal, "stage the standard input: %v", err)
	}
	part := f.Name()
	n, err := receiveStdin(stream, f, first.GetData(), size)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = status.Errorf(codes.Internal, "stage the standard input: %v", cerr)
	}
	if err == nil && n != size {
		err = status.Errorf(codes.InvalidArgument, "standard input of %d bytes ended after %d", size, n)
	}
	if err == nil {
		// Not synced: a crash of the machine loses it with the process's
		// other files, and the manager sends both again.
		if err = os.Rename(part, path); err != nil {
			err = status.Errorf(codes.Internal, "stage the standard input: %v", err)
		}
	}
	if err != nil {
		os.Remove(part)
		return err
	}
	return stream.SendAndClose(&pb.PutStdinResponse{})
}

// receiveStdin writes data, then what the stream brings, to f: at most size
// bytes.
func receiveStdin(stream pb.WorkerProcessService_PutStdinServer, f *os.File, data []byte, size int64) (int64, error) {
	var n int64
	for {
		if n += int64(len(data)); n > size {
			return n, status.Errorf(codes.InvalidArgument, "standard input of %d bytes is longer", size)
		}
		if _, err := f.Write(data); err != nil {
			return n, status.Errorf(codes.ResourceExhausted, "stage the standard input: %v", err)
		}
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		data = msg.GetData()
	}
}

// stagedStdin returns the staged input of id, which must be n bytes long.
func (w *Worker) stagedStdin(id devops.ProcessID, n int64) (string, error) {
	path := w.stagedPath(id)
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("its standard input of %d bytes did not come ahead of it", n)
	}
	if st.Size() != n {
		return "", fmt.Errorf("its standard input is %d bytes, not %d", st.Size(), n)
	}
	return path, nil
}

// known reports whether id is started, or starting, here.
func (w *Worker) known(id devops.ProcessID) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, started := w.procs[id]
	_, starting := w.starting[id]
	return started || starting
}

// pruneStaged removes the staged inputs (and their parts) older than
// stagedTTL.
func (w *Worker) pruneStaged() {
	dir := w.stagedDir()
	ents, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			w.log.Warn("read staged inputs", "err", err)
		}
		return
	}
	cutoff := time.Now().Add(-stagedTTL)
	for _, e := range ents {
		if info, err := e.Info(); err == nil && info.ModTime().Before(cutoff) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
