// Package storetest holds the conformance suite that every implementation of
// the manager's store runs, so that a test written against the in-memory
// store holds for the JetStream one too. It imports only the standard
// library, package devops and package store.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/store"
)

// Store is what the suite exercises: the methods store.JetStream and
// store.Memory share.
type Store interface {
	PutWorker(ctx context.Context, w devops.Worker) error
	DeleteWorker(ctx context.Context, id devops.WorkerID) error
	Workers(ctx context.Context) ([]devops.Worker, error)
	PutProcess(ctx context.Context, p devops.Process) error
	Process(ctx context.Context, id devops.ProcessID) (devops.Process, error)
	Processes(ctx context.Context) ([]devops.Process, error)
	PrepareOutput(ctx context.Context, id devops.ProcessID) error
	AppendOutput(ctx context.Context, id devops.ProcessID, c devops.Chunk) error
	SkipOutput(ctx context.Context, id devops.ProcessID, to int64) error
	CloseOutput(ctx context.Context, id devops.ProcessID) error
	DeleteOutput(ctx context.Context, id devops.ProcessID) error
	Forget(ctx context.Context, processes []devops.ProcessID, runs []devops.RunID) error
	OutputEnd(ctx context.Context, id devops.ProcessID) (int64, error)
	OutputInfo(ctx context.Context, id devops.ProcessID) (store.OutputInfo, error)
	ReadOutput(ctx context.Context, id devops.ProcessID, from int64, follow bool, fn func(devops.Chunk) error) error
}

// MaxProcessOutputBytes is the per-process output limit the suite expects
// the stores given to Run to be configured with. It is small so that the
// limit test is quick; every other test stays well below it.
const MaxProcessOutputBytes = 1 << 20

// testTimeout bounds every wait of the suite, so that a store that loses a
// wake-up fails the test instead of hanging it.
const testTimeout = 20 * time.Second

// Run runs the suite. open returns a new, empty store configured with
// MaxProcessOutputBytes; it registers the store's cleanup with tb.
func Run(t *testing.T, open func(tb testing.TB) Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s Store)
	}{
		{"Workers", testWorkers},
		{"Processes", testProcesses},
		{"Invalid", testInvalid},
		{"OutputRoundTrip", testOutputRoundTrip},
		{"ReadFrom", testReadFrom},
		{"FollowLive", testFollowLive},
		{"FollowClosed", testFollowClosed},
		{"NoOutput", testNoOutput},
		{"PrepareOutput", testPrepareOutput},
		{"FollowCancel", testFollowCancel},
		{"CallbackError", testCallbackError},
		{"ConcurrentFollowers", testConcurrentFollowers},
		{"OutputEnd", testOutputEnd},
		{"Limit", testLimit},
		{"AppendAfterClose", testAppendAfterClose},
		{"DeleteOutput", testDeleteOutput},
		{"Forget", testForget},
		{"SkipOutput", testSkipOutput},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open(t))
		})
	}
}

// Context returns a context for one test, ended by the test's end or by a
// generous deadline.
func Context(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), testTimeout)
	tb.Cleanup(cancel)
	return ctx
}

// ProcessID returns a UUIDv7-shaped id; ids sort by n.
func ProcessID(n int) devops.ProcessID {
	return devops.ProcessID(fmt.Sprintf("01900000-0000-7000-8000-%012x", n))
}

// NormalizeWorker puts the times of w in UTC without a monotonic reading,
// as a store returns them, so that reflect.DeepEqual compares values.
func NormalizeWorker(w devops.Worker) devops.Worker {
	w.RegisteredAt = w.RegisteredAt.UTC()
	w.LastSeen = w.LastSeen.UTC()
	w.Metrics.Time = w.Metrics.Time.UTC()
	if len(w.Labels) == 0 {
		w.Labels = nil
	}
	return w
}

// NormalizeProcess does for a process what NormalizeWorker does for a
// worker.
func NormalizeProcess(p devops.Process) devops.Process {
	for _, t := range []*time.Time{&p.CreatedAt, &p.StartedAt, &p.EndedAt, &p.StateChangedAt} {
		*t = t.UTC()
	}
	if len(p.Spec.Env) == 0 {
		p.Spec.Env = nil
	}
	if len(p.Spec.Argv) == 0 {
		p.Spec.Argv = nil
	}
	if len(p.Spec.SecretEnvKeys) == 0 {
		p.Spec.SecretEnvKeys = nil
	}
	return p
}

func testWorkers(t *testing.T, s Store) {
	ctx := Context(t)
	ws, err := s.Workers(ctx)
	if err != nil || len(ws) != 0 {
		t.Fatalf("Workers() on empty store = %v, %v; want none", ws, err)
	}
	at := time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.FixedZone("X", 3600))
	in := []devops.Worker{
		{ID: "w-bravo", Name: "bravo", Labels: map[string]string{"zone": "a", "gpu": ""}, Address: "10.0.0.2:7000",
			Capacity: 8, Running: 3, State: devops.WorkerUp, RegisteredAt: at, LastSeen: at.Add(time.Minute),
			Fingerprint: devops.Fingerprint{OS: "linux", Arch: "amd64", CPUs: 4, MemoryBytes: 1 << 34, Cgroups: "v2", Namespaces: true},
			Metrics:     devops.Metrics{Time: at, CPUPercent: 12.5, Load1: 0.25, MemoryUsedBytes: 1 << 30, Uptime: 90 * time.Second, Version: "v1"},
			Version:     "v1.2.3"},
		{ID: "odd.id with *>", Name: "alpha", State: devops.WorkerDraining},
		{ID: "w-charlie", Name: "charlie", State: devops.WorkerDown, LastSeen: time.Now()},
	}
	for _, w := range in {
		if err := s.PutWorker(ctx, w); err != nil {
			t.Fatalf("PutWorker(%s) = %v", w.ID, err)
		}
	}
	in[0].State = devops.WorkerDown
	in[0].Running = 0
	if err := s.PutWorker(ctx, in[0]); err != nil {
		t.Fatalf("PutWorker(%s) again = %v", in[0].ID, err)
	}
	want := []devops.Worker{NormalizeWorker(in[1]), NormalizeWorker(in[0]), NormalizeWorker(in[2])}
	got, err := s.Workers(ctx)
	if err != nil {
		t.Fatalf("Workers() = %v", err)
	}
	for i := range got {
		got[i] = NormalizeWorker(got[i])
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Workers() = %+v\nwant %+v", got, want)
	}

	for _, id := range []devops.WorkerID{in[1].ID, "never-stored"} {
		if err := s.DeleteWorker(ctx, id); err != nil {
			t.Errorf("DeleteWorker(%s) = %v", id, err)
		}
	}
	got, err = s.Workers(ctx)
	if err != nil || len(got) != 2 || got[0].ID != in[0].ID || got[1].ID != in[2].ID {
		t.Errorf("Workers() after DeleteWorker = %+v, %v; want bravo and charlie", got, err)
	}
}

func testProcesses(t *testing.T, s Store) {
	ctx := Context(t)
	if _, err := s.Process(ctx, ProcessID(1)); !errors.Is(err, devops.ErrNotFound) {
		t.Errorf("Process(unknown) error = %v, want ErrNotFound", err)
	}
	ps, err := s.Processes(ctx)
	if err != nil || len(ps) != 0 {
		t.Fatalf("Processes() on empty store = %v, %v; want none", ps, err)
	}
	at := time.Date(2025, 3, 4, 5, 6, 7, 987654321, time.UTC)
	full := devops.Process{
		ID: ProcessID(2), WorkerID: "w-1", WorkerName: "alpha",
		Spec: devops.Spec{
			Argv: []string{"sh", "-c", "echo 'hi' \x00 é"}, Env: map[string]string{"A": "1", "SECRET": "x"},
			Dir: "/tmp/x", Timeout: 90 * time.Second, Grace: 1500 * time.Millisecond,
			Limits: devops.Limits{MemoryBytes: 1 << 30, CPUs: 1.5, Pids: 64, MaxOutputBytes: 1 << 20},
			User:   "nobody", KeepDir: true, Image: "alpine:3", SecretEnvKeys: []string{"SECRET"},
		},
		State: devops.StateFailed, Code: 3, Signal: 9, Reason: "killed",
		CreatedAt: at, StartedAt: at.Add(time.Millisecond), EndedAt: at.Add(time.Hour).In(time.FixedZone("Y", -7200)),
		StateChangedAt: time.Now(), OutputBytes: 12345, PeakMemory: 1 << 20, CPUTime: 1234567 * time.Microsecond,
		IdempotencyKey: "key-1",
	}
	in := []devops.Process{
		{ID: ProcessID(3), State: devops.StatePending, CreatedAt: at},
		full,
		{ID: ProcessID(1), State: devops.StateRunning, Spec: devops.Spec{Argv: []string{"true"}}},
	}
	for _, p := range in {
		if err := s.PutProcess(ctx, p); err != nil {
			t.Fatalf("PutProcess(%s) = %v", p.ID, err)
		}
	}
	// Upsert: the later record wins.
	in[0].State = devops.StateRunning
	in[0].StartedAt = at.Add(time.Second)
	if err := s.PutProcess(ctx, in[0]); err != nil {
		t.Fatalf("PutProcess(%s) again = %v", in[0].ID, err)
	}
	for _, p := range in {
		got, err := s.Process(ctx, p.ID)
		if err != nil {
			t.Fatalf("Process(%s) = %v", p.ID, err)
		}
		if got, want := NormalizeProcess(got), NormalizeProcess(p); !reflect.DeepEqual(got, want) {
			t.Errorf("Process(%s) = %+v\nwant %+v", p.ID, got, want)
		}
	}
	got, err := s.Processes(ctx)
	if err != nil {
		t.Fatalf("Processes() = %v", err)
	}
	want := []devops.Process{NormalizeProcess(in[2]), NormalizeProcess(in[1]), NormalizeProcess(in[0])}
	for i := range got {
		got[i] = NormalizeProcess(got[i])
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Processes() = %+v\nwant %+v", got, want)
	}
	// What the caller does to its copy later must not reach the store.
	full.Spec.Env["A"] = "changed"
	full.Spec.Argv[0] = "changed"
	if p, _ := s.Process(ctx, full.ID); p.Spec.Env["A"] != "1" || p.Spec.Argv[0] != "sh" {
		t.Errorf("Process(%s) shares its maps or slices with the caller: %+v", full.ID, p.Spec)
	}
}

func testInvalid(t *testing.T, s Store) {
	ctx := Context(t)
	id := ProcessID(1)
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"PutProcess empty id", s.PutProcess(ctx, devops.Process{}), devops.ErrInvalid},
		{"PutWorker empty id", s.PutWorker(ctx, devops.Worker{Name: "x"}), devops.ErrInvalid},
		{"AppendOutput bad stream", s.AppendOutput(ctx, id, devops.Chunk{Stream: 7, Data: []byte("x")}), devops.ErrInvalid},
		{"AppendOutput negative offset", s.AppendOutput(ctx, id, devops.Chunk{Offset: -1, Stream: devops.Stdout, Data: []byte("x")}), devops.ErrInvalid},
		{"AppendOutput empty id", s.AppendOutput(ctx, "", devops.Chunk{Stream: devops.Stdout, Data: []byte("x")}), devops.ErrInvalid},
		{"ReadOutput negative offset", s.ReadOutput(ctx, id, -1, false, func(devops.Chunk) error { return nil }), devops.ErrOutOfRange},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, tt.want) {
			t.Errorf("%s: error = %v, want %v", tt.name, tt.err, tt.want)
		}
	}
}

// tape is the expected output of a process: its bytes and, for each byte,
// the stream it belongs to.
type tape struct {
	data    []byte
	streams []devops.Stream
}

func (tp *tape) end() int64 { return int64(len(tp.data)) }

// randomChunks appends n chunks of random binary data (sizes up to maxSize,
// either stream) to the tape and returns them.
func (tp *tape) randomChunks(r *rand.Rand, n, maxSize int) []devops.Chunk {
	var cs []devops.Chunk
	for range n {
		c := devops.Chunk{Offset: tp.end(), Stream: devops.Stdout, Data: make([]byte, 1+r.IntN(maxSize))}
		if r.IntN(3) == 0 {
			c.Stream = devops.Stderr
		}
		for i := range c.Data {
			c.Data[i] = byte(r.Uint32())
		}
		tp.add(c)
		cs = append(cs, c)
	}
	return cs
}

func (tp *tape) add(c devops.Chunk) {
	tp.data = append(tp.data, c.Data...)
	for range c.Data {
		tp.streams = append(tp.streams, c.Stream)
	}
}

func newRand(t testing.TB) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(len(t.Name())), 42))
}

func appendAll(tb testing.TB, ctx context.Context, s Store, id devops.ProcessID, cs []devops.Chunk) {
	tb.Helper()
	for _, c := range cs {
		if err := s.AppendOutput(ctx, id, c); err != nil {
			tb.Fatalf("AppendOutput(%s, offset %d) = %v", id, c.Offset, err)
		}
	}
}

// collect reads the output of id from offset from.
func collect(ctx context.Context, s Store, id devops.ProcessID, from int64, follow bool) ([]devops.Chunk, error) {
	var got []devops.Chunk
	err := s.ReadOutput(ctx, id, from, follow, func(c devops.Chunk) error {
		c.Data = bytes.Clone(c.Data)
		got = append(got, c)
		return nil
	})
	return got, err
}

// checkChunks reports whether got is exactly the tape from offset from on:
// contiguous offsets, same bytes, same streams.
func checkChunks(tb testing.TB, what string, got []devops.Chunk, want *tape, from int64) {
	tb.Helper()
	at := from
	for i, c := range got {
		if c.Offset != at {
			tb.Fatalf("%s: chunk %d at offset %d, want %d", what, i, c.Offset, at)
		}
		if len(c.Data) == 0 {
			tb.Fatalf("%s: chunk %d at offset %d is empty", what, i, c.Offset)
		}
		if c.End() > want.end() {
			tb.Fatalf("%s: chunk %d ends at %d, past the end %d", what, i, c.End(), want.end())
		}
		if !bytes.Equal(c.Data, want.data[c.Offset:c.End()]) {
			tb.Fatalf("%s: chunk %d at offset %d: bytes differ", what, i, c.Offset)
		}
		for j := c.Offset; j < c.End(); j++ {
			if want.streams[j] != c.Stream {
				tb.Fatalf("%s: chunk %d at offset %d is %v, byte %d is %v", what, i, c.Offset, c.Stream, j, want.streams[j])
			}
		}
		at = c.End()
	}
	if wantEnd := max(want.end(), from); at != wantEnd {
		tb.Fatalf("%s: output ends at %d, want %d", what, at, wantEnd)
	}
}

func testOutputRoundTrip(t *testing.T, s Store) {
	ctx := Context(t)
	id := ProcessID(1)
	r := newRand(t)
	var tp tape
	cs := tp.randomChunks(r, 150, 2048)
	// The largest chunk a worker sends.
	cs = append(cs, tp.randomChunks(r, 1, 1)...)
	big := devops.Chunk{Offset: tp.end(), Stream: devops.Stderr, Data: make([]byte, 256<<10)}
	for i := range big.Data {
		big.Data[i] = byte(r.Uint32())
	}
	tp.add(big)
	cs = append(cs, big)
	cs = append(cs, tp.randomChunks(r, 150, 2048)...)
	appendAll(t, ctx, s, id, cs)

	got, err := collect(ctx, s, id, 0, false)
	if err != nil {
		t.Fatalf("ReadOutput(0, false) = %v", err)
	}
	checkChunks(t, "ReadOutput(0, false)", got, &tp, 0)

	// Each stream on its own, too: the bytes of stdout are what the
	// command wrote to stdout.
	var wantOut, gotOut bytes.Buffer
	for _, c := range cs {
		if c.Stream == devops.Stdout {
			wantOut.Write(c.Data)
		}
	}
	for _, c := range got {
		if c.Stream == devops.Stdout {
			gotOut.Write(c.Data)
		}
	}
	if !bytes.Equal(gotOut.Bytes(), wantOut.Bytes()) {
		t.Errorf("stdout: got %d bytes, want %d, contents differ", gotOut.Len(), wantOut.Len())
	}
	// Another process's output is apart.
	if got, err := collect(ctx, s, ProcessID(2), 0, false); err != nil || len(got) != 0 {
		t.Errorf("ReadOutput(other process) = %d chunks, %v; want none", len(got), err)
	}
}

func testReadFrom(t *testing.T, s Store) {
	ctx := Context(t)
	id := ProcessID(1)
	var tp tape
	cs := tp.randomChunks(newRand(t), 20, 1000)
	appendAll(t, ctx, s, id, cs)
	if err := s.CloseOutput(ctx, id); err != nil {
		t.Fatalf("CloseOutput = %v", err)
	}
	tests := []struct {
		name string
		from int64
	}{
		{"zero", 0},
		{"first byte of second chunk", cs[1].Offset},
		{"middle of a chunk", cs[5].Offset + int64(len(cs[5].Data))/2},
		{"last byte of a chunk", cs[7].End() - 1},
		{"last byte", tp.end() - 1},
		{"end", tp.end()},
		{"past end", tp.end() + 100},
	}
	for _, tt := range tests {
		for _, follow := range []bool{false, true} {
			what := fmt.Sprintf("%s: ReadOutput(%d, %v)", tt.name, tt.from, follow)
			got, err := collect(ctx, s, id, tt.from, follow)
			if err != nil {
				t.Fatalf("%s = %v", what, err)
			}
			checkChunks(t, what, got, &tp, min(tt.from, tp.end()))
		}
	}
}

// follower runs ReadOutput with follow in a goroutine and records what it
// gets.
type follower struct {
	done chan error // receives ReadOutput's result

	mu       sync.Mutex // guards the fields below
	chunks   []devops.Chunk
	end      int64         // just past the last byte received
	progress chan struct{} // closed and replaced on each chunk
}

func startFollower(ctx context.Context, s Store, id devops.ProcessID, from int64) *follower {
	f := &follower{done: make(chan error, 1), end: from, progress: make(chan struct{})}
	go func() {
		f.done <- s.ReadOutput(ctx, id, from, true, func(c devops.Chunk) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			c.Data = bytes.Clone(c.Data)
			f.chunks = append(f.chunks, c)
			f.end = c.End()
			close(f.progress)
			f.progress = make(chan struct{})
			return nil
		})
	}()
	return f
}

// waitFor waits until the follower received everything before offset n.
func (f *follower) waitFor(tb testing.TB, ctx context.Context, n int64) {
	tb.Helper()
	for {
		f.mu.Lock()
		end, progress := f.end, f.progress
		f.mu.Unlock()
		if end >= n {
			return
		}
		select {
		case <-progress:
		case err := <-f.done:
			tb.Fatalf("follower returned %v at offset %d, waiting for %d", err, end, n)
		case <-ctx.Done():
			tb.Fatalf("follower at offset %d, waiting for %d: %v", end, n, ctx.Err())
		}
	}
}

// wait waits for ReadOutput to return and returns its error and chunks.
func (f *follower) wait(tb testing.TB, ctx context.Context) ([]devops.Chunk, error) {
	tb.Helper()
	select {
	case err := <-f.done:
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.chunks, err
	case <-ctx.Done():
		tb.Fatalf("follower did not return: %v", ctx.Err())
		return nil, nil
	}
}

func testFollowLive(t *testing.T, s Store) {
	ctx := Context(t)
	id := ProcessID(1)
	r := newRand(t)
	var tp tape
	first := tp.randomChunks(r, 3, 500)
	appendAll(t, ctx, s, id, first)

	mid := first[1].Offset + 1
	fromZero := startFollower(ctx, s, id, 0)
	fromMid := startFollower(ctx, s, id, mid)
	// Both have caught up with history before anything new is appended, so
	// what follows reaches them live.
	fromZero.waitFor(t, ctx, tp.end())
	fromMid.waitFor(t, ctx, tp.end())
	for range 20 {
		cs := tp.randomChunks(r, 1, 4096)
		appendAll(t, ctx, s, id, cs)
		fromZero.waitFor(t, ctx, tp.end())
	}
	appendAll(t, ctx, s, id, tp.randomChunks(r, 30, 4096))
	if err := s.CloseOutput(ctx, id); err != nil {
		t.Fatalf("CloseOutput = %v", err)
	}
	for _, f := range []struct {
		name string
		f    *follower
		from int64
	}{{"from 0", fromZero, 0}, {"from middle", fromMid, mid}} {
		got, err := f.f.wait(t, ctx)
		if err != nil {
			t.Fatalf("follower %s: ReadOutput = %v", f.name, err)
		}
		checkChunks(t, "follower "+f.name, got, &tp, f.from)
	}
}

func testFollowClosed(t *testing.T, s Store) {
	ctx := Context(t)
	id := ProcessID(1)
	var tp tape
	appendAll(t, ctx, s, id, tp.randomChunks(newRand(t), 10, 1000))
	if err := s.CloseOutput(ctx, id); err != nil {
		t.Fatalf("CloseOutput = %v", err)
	}
	if err := s.CloseOutput(ctx, id); err != nil {
		t.Fatalf("CloseOutput again = %v", err)
	}
	got, err := collect(ctx, s, id, 0, true)
	if err != nil {
		t.Fatalf("ReadOutput(0, true) = %v", err)
	}
	checkChunks(t, "ReadOutput(0, true)", got, &tp, 0)
}

func testNoOutput(t *testing.T, s Store) {
	ctx := Context(t)
	open, closed := ProcessID(1), ProcessID(2)
	if got, err := collect(ctx, s, open, 0, false); err != nil || len(got) != 0 {
		t.Errorf("ReadOutput(no output, false) = %d chunks, %v; want none", len(got), err)
	}
	if err := s.CloseOutput(ctx, closed); err != nil {
		t.Fatalf("CloseOutput = %v", err)
	}
	for _, follow := range []bool{false, true} {
		if got, err := collect(ctx, s, closed, 0, follow); err != nil || len(got) != 0 {
			t.Errorf("ReadOutput(closed, no output, %v) = %d chunks, %v; want none", follow, len(got), err)
		}
	}
	// A follower that starts before the process wrote anything sees its
	// output and its end.
	followWhileWriting(t, ctx, s, open)
}

// followWhileWriting starts a follower of id's output, which has none yet,
// appends three chunks and closes the output; the follower must see them
// and the end. It returns what was written.
func followWhileWriting(t *testing.T, ctx context.Context, s Store, id devops.ProcessID) *tape {
	t.Helper()
	f := startFollower(ctx, s, id, 0)
	var tp tape
	appendAll(t, ctx, s, id, tp.randomChunks(newRand(t), 3, 100))
	if err := s.CloseOutput(ctx, id); err != nil {
		t.Fatalf("CloseOutput = %v", err)
	}
	got, err := f.wait(t, ctx)
	if err != nil {
		t.Fatalf("follower = %v", err)
	}
	checkChunks(t, "follower", got, &tp, 0)
	return &tp
}

// testPrepareOutput: a prepared output is an empty one, a follower sees
// what comes after, twice is harmless, and after close it is refused.
func testPrepareOutput(t *testing.T, s Store) {
	ctx := Context(t)
	id := ProcessID(1)
	for range 2 {
		if err := s.PrepareOutput(ctx, id); err != nil {
			t.Fatalf("PrepareOutput = %v", err)
		}
	}
	if end, err := s.OutputEnd(ctx, id); err != nil || end != 0 {
		t.Fatalf("OutputEnd after PrepareOutput = %d, %v; want 0", end, err)
	}
	if got, err := collect(ctx, s, id, 0, false); err != nil || len(got) != 0 {
		t.Errorf("ReadOutput after PrepareOutput = %d chunks, %v; want none", len(got), err)
	}
	tp := followWhileWriting(t, ctx, s, id)
	// Memory has nothing to prepare; JetStream refuses.
	if err := s.PrepareOutput(ctx, id); !errors.Is(err, devops.ErrTerminal) && err != nil {
		t.Errorf("PrepareOutput after CloseOutput = %v, want nil or ErrTerminal", err)
	}
	// Either way the closed output is as it was.
	got, err := collect(ctx, s, id, 0, true)
	if err != nil {
		t.Fatalf("ReadOutput after a late PrepareOutput = %v", err)
	}
	checkChunks(t, "after a late PrepareOutput", got, tp, 0)
}

func testFollowCancel(t *testing.T, s Store) {
	ctx := Context(t)
	id := ProcessID(1)
	var tp tape
	appendAll(t, ctx, s, id, tp.randomChunks(newRand(t), 2, 100))
	tests := []struct {
		name string
		id   devops.ProcessID
		wait int64
	}{
		{"after history", id, tp.end()},
		{"no output yet", ProcessID(2), 0},
	}
	for _, tt := range tests {
		fctx, cancel := context.WithCancel(ctx)
		f := startFollower(fctx, s, tt.id, 0)
		f.waitFor(t, ctx, tt.wait)
		cancel()
		if _, err := f.wait(t, ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("%s: ReadOutput after cancel = %v, want context.Canceled", tt.name, err)
		}
	}
}

func testCallbackError(t *testing.T, s Store) {
	ctx := Context(t)
	id := ProcessID(1)
	var tp tape
	appendAll(t, ctx, s, id, tp.randomChunks(newRand(t), 5, 100))
	errStop := errors.New("stop here")
	for _, follow := range []bool{false, true} {
		calls := 0
		err := s.ReadOutput(ctx, id, 0, follow, func(devops.Chunk) error {
			calls++
			return errStop
		})
		if err != errStop || calls != 1 {
			t.Errorf("ReadOutput(follow %v) with failing fn = %v after %d calls, want %v after 1", follow, err, calls, errStop)
		}
	}
}

func testConcurrentFollowers(t *testing.T, s Store) {
	ctx := Context(t)
	id := ProcessID(1)
	fs := []*follower{startFollower(ctx, s, id, 0), startFollower(ctx, s, id, 0)}
	r := newRand(t)
	var tp tape
	// Appends race with the followers' start: wherever each joins, it must
	// see every byte once.
	for range 100 {
		appendAll(t, ctx, s, id, tp.randomChunks(r, 1, 4096))
	}
	if err := s.CloseOutput(ctx, id); err != nil {
		t.Fatalf("CloseOutput = %v", err)
	}
	for i, f := range fs {
		got, err := f.wait(t, ctx)
		if err != nil {
			t.Fatalf("follower %d = %v", i, err)
		}
		checkChunks(t, fmt.Sprintf("follower %d", i), got, &tp, 0)
	}
}

func testOutputEnd(t *testing.T, s Store) {
	ctx := Context(t)
	id := ProcessID(1)
	if end, err := s.OutputEnd(ctx, id); err != nil || end != 0 {
		t.Errorf("OutputEnd(no output) = %d, %v; want 0", end, err)
	}
	var tp tape
	cs := tp.randomChunks(newRand(t), 10, 1000)
	appendAll(t, ctx, s, id, cs)
	if end, err := s.OutputEnd(ctx, id); err != nil || end != tp.end() {
		t.Errorf("OutputEnd = %d, %v; want %d", end, err, tp.end())
	}
	// A worker resending what is stored already (it reconnected before it
	// heard the ack) changes nothing; a resent chunk overlapping the end
	// adds only its new bytes.
	appendAll(t, ctx, s, id, cs[8:])
	more := devops.Chunk{Offset: tp.end(), Stream: devops.Stdout, Data: []byte("tail")}
	overlap := devops.Chunk{Offset: cs[9].Offset, Stream: devops.Stdout, Data: append(bytes.Clone(cs[9].Data), more.Data...)}
	overlap.Stream = cs[9].Stream
	more.Stream = cs[9].Stream
	tp.add(more)
	appendAll(t, ctx, s, id, []devops.Chunk{overlap})
	if end, err := s.OutputEnd(ctx, id); err != nil || end != tp.end() {
		t.Errorf("OutputEnd after resend = %d, %v; want %d", end, err, tp.end())
	}
	// A gap would lose bytes.
	gap := devops.Chunk{Offset: tp.end() + 1, Stream: devops.Stdout, Data: []byte("x")}
	if err := s.AppendOutput(ctx, id, gap); !errors.Is(err, devops.ErrOutOfRange) {
		t.Errorf("AppendOutput(past the end) = %v, want ErrOutOfRange", err)
	}
	got, err := collect(ctx, s, id, 0, false)
	if err != nil {
		t.Fatalf("ReadOutput = %v", err)
	}
	checkChunks(t, "ReadOutput", got, &tp, 0)
}

func testLimit(t *testing.T, s Store) {
	ctx := Context(t)
	id := ProcessID(1)
	r := newRand(t)
	var tp tape
	limited := 0
	for tp.end() < MaxProcessOutputBytes+300<<10 {
		var c devops.Chunk
		c.Offset = tp.end()
		c.Stream = devops.Stdout
		c.Data = make([]byte, 100<<10)
		for i := range c.Data {
			c.Data[i] = byte(r.Uint32())
		}
		tp.add(c)
		err := s.AppendOutput(ctx, id, c)
		switch {
		case errors.Is(err, store.ErrOutputLimit):
			limited++
			if c.End() <= MaxProcessOutputBytes {
				t.Fatalf("AppendOutput(offset %d) = %v below the limit", c.Offset, err)
			}
		case err != nil:
			t.Fatalf("AppendOutput(offset %d) = %v", c.Offset, err)
		}
	}
	if limited != 1 {
		t.Errorf("AppendOutput returned ErrOutputLimit %d times, want once", limited)
	}
	want := tape{data: tp.data[:MaxProcessOutputBytes], streams: tp.streams[:MaxProcessOutputBytes]}
	got, err := collect(ctx, s, id, 0, false)
	if err != nil {
		t.Fatalf("ReadOutput = %v", err)
	}
	checkChunks(t, "ReadOutput", got, &want, 0)
	info, err := s.OutputInfo(ctx, id)
	if want := (store.OutputInfo{End: MaxProcessOutputBytes, Truncated: true}); err != nil || info != want {
		t.Errorf("OutputInfo = %+v, %v; want %+v", info, err, want)
	}
	if err := s.CloseOutput(ctx, id); err != nil {
		t.Fatalf("CloseOutput = %v", err)
	}
	info, err = s.OutputInfo(ctx, id)
	if want := (store.OutputInfo{End: MaxProcessOutputBytes, Closed: true, Truncated: true}); err != nil || info != want {
		t.Errorf("OutputInfo after close = %+v, %v; want %+v", info, err, want)
	}
}

func testAppendAfterClose(t *testing.T, s Store) {
	ctx := Context(t)
	id := ProcessID(1)
	var tp tape
	appendAll(t, ctx, s, id, tp.randomChunks(newRand(t), 2, 100))
	if err := s.CloseOutput(ctx, id); err != nil {
		t.Fatalf("CloseOutput = %v", err)
	}
	c := devops.Chunk{Offset: tp.end(), Stream: devops.Stdout, Data: []byte("late")}
	if err := s.AppendOutput(ctx, id, c); !errors.Is(err, devops.ErrTerminal) {
		t.Errorf("AppendOutput after CloseOutput = %v, want ErrTerminal", err)
	}
	info, err := s.OutputInfo(ctx, id)
	if want := (store.OutputInfo{End: tp.end(), Closed: true}); err != nil || info != want {
		t.Errorf("OutputInfo = %+v, %v; want %+v", info, err, want)
	}
}

func testDeleteOutput(t *testing.T, s Store) {
	ctx := Context(t)
	id, other := ProcessID(1), ProcessID(2)
	r := newRand(t)
	var tp, otherTape tape
	appendAll(t, ctx, s, id, tp.randomChunks(r, 5, 100))
	appendAll(t, ctx, s, other, otherTape.randomChunks(r, 5, 100))
	if err := s.DeleteOutput(ctx, id); err != nil {
		t.Fatalf("DeleteOutput = %v", err)
	}
	for _, follow := range []bool{false, true} {
		if got, err := collect(ctx, s, id, 0, follow); err != nil || len(got) != 0 {
			t.Errorf("ReadOutput(deleted, %v) = %d chunks, %v; want none", follow, len(got), err)
		}
	}
	if end, err := s.OutputEnd(ctx, id); err != nil || end != tp.end() {
		t.Errorf("OutputEnd(deleted) = %d, %v; want %d", end, err, tp.end())
	}
	got, err := collect(ctx, s, other, 0, false)
	if err != nil {
		t.Fatalf("ReadOutput(other) = %v", err)
	}
	checkChunks(t, "ReadOutput(other)", got, &otherTape, 0)
}

// testForget: a forgotten process has no record and no output, and the
// others keep theirs.
func testForget(t *testing.T, s Store) {
	ctx := Context(t)
	gone, kept, live := ProcessID(1), ProcessID(2), ProcessID(3)
	r := newRand(t)
	var tp, keptTape tape
	for _, id := range []devops.ProcessID{gone, kept, live} {
		if err := s.PutProcess(ctx, devops.Process{ID: id, State: devops.StateSucceeded}); err != nil {
			t.Fatal(err)
		}
	}
	appendAll(t, ctx, s, gone, tp.randomChunks(r, 5, 100))
	appendAll(t, ctx, s, kept, keptTape.randomChunks(r, 5, 100))
	if err := s.CloseOutput(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if err := s.Forget(ctx, []devops.ProcessID{gone, live}, nil); err != nil {
		t.Fatalf("Forget = %v", err)
	}
	for _, id := range []devops.ProcessID{gone, live} {
		if _, err := s.Process(ctx, id); !errors.Is(err, devops.ErrNotFound) {
			t.Errorf("Process(forgotten %s) error = %v, want ErrNotFound", id, err)
		}
	}
	if got, err := collect(ctx, s, gone, 0, false); err != nil || len(got) != 0 {
		t.Errorf("ReadOutput(forgotten) = %d chunks, %v; want none", len(got), err)
	}
	ps, err := s.Processes(ctx)
	if err != nil || len(ps) != 1 || ps[0].ID != kept {
		t.Errorf("Processes() after Forget = %v, %v; want only %s", ps, err, kept)
	}
	got, err := collect(ctx, s, kept, 0, false)
	if err != nil {
		t.Fatalf("ReadOutput(kept) = %v", err)
	}
	checkChunks(t, "ReadOutput(kept)", got, &keptTape, 0)
	// Forgetting what is not there is no error.
	if err := s.Forget(ctx, []devops.ProcessID{gone}, nil); err != nil {
		t.Errorf("Forget(again) = %v", err)
	}
}

// testSkipOutput: lost output (a worker's spool dropped it) moves the end
// on; readers pass over it, from before, in and after the gap, and the
// chunks on both sides keep their offsets.
func testSkipOutput(t *testing.T, s Store) {
	ctx := Context(t)
	id := ProcessID(1)
	before := devops.Chunk{Offset: 0, Stream: devops.Stdout, Data: []byte("before\n")}
	after := devops.Chunk{Offset: 100, Stream: devops.Stderr, Data: []byte("after\n")}
	appendAll(t, ctx, s, id, []devops.Chunk{before})
	f := startFollower(ctx, s, id, 0)
	if err := s.SkipOutput(ctx, id, after.Offset); err != nil {
		t.Fatalf("SkipOutput(%d) = %v", after.Offset, err)
	}
	// Behind the end: nothing changes.
	if err := s.SkipOutput(ctx, id, 50); err != nil {
		t.Fatalf("SkipOutput(50) = %v", err)
	}
	if end, err := s.OutputEnd(ctx, id); err != nil || end != after.Offset {
		t.Fatalf("OutputEnd after SkipOutput = %d, %v; want %d", end, err, after.Offset)
	}
	appendAll(t, ctx, s, id, []devops.Chunk{after})
	if err := s.CloseOutput(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := s.SkipOutput(ctx, id, 1000); !errors.Is(err, devops.ErrTerminal) {
		t.Errorf("SkipOutput after CloseOutput = %v, want ErrTerminal", err)
	}
	want := func(from int64) []devops.Chunk {
		var cs []devops.Chunk
		for _, c := range []devops.Chunk{before, after} {
			if c.End() > from {
				if c.Offset < from {
					c.Data, c.Offset = c.Data[from-c.Offset:], from
				}
				cs = append(cs, c)
			}
		}
		return cs
	}
	for _, from := range []int64{0, 3, 7, 50, 100, 103} {
		got, err := collect(ctx, s, id, from, false)
		if err != nil {
			t.Fatalf("ReadOutput(from %d) = %v", from, err)
		}
		if !reflect.DeepEqual(joined(got), want(from)) {
			t.Errorf("ReadOutput(from %d) = %+v, want %+v", from, joined(got), want(from))
		}
	}
	got, err := f.wait(t, ctx)
	if err != nil || !reflect.DeepEqual(joined(got), want(0)) {
		t.Errorf("follower across the gap got %+v, %v; want %+v", joined(got), err, want(0))
	}
}

// joined merges adjacent chunks of one stream, so that how a store split
// what it was given does not matter.
func joined(cs []devops.Chunk) []devops.Chunk {
	var out []devops.Chunk
	for _, c := range cs {
		if n := len(out); n > 0 && out[n-1].Stream == c.Stream && out[n-1].End() == c.Offset {
			out[n-1].Data = append(bytes.Clone(out[n-1].Data), c.Data...)
			continue
		}
		out = append(out, c)
	}
	return out
}
