package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/store"
	"github.com/devops-platform/devops/internal/store/storetest"
)

var _ storetest.Store = (*store.JetStream)(nil)

// openJetStream opens a JetStream store on dir, configured as the
// conformance suite expects, and closes it when tb ends.
func openJetStream(tb testing.TB, dir string) *store.JetStream {
	tb.Helper()
	return openConfig(tb, store.Config{Dir: dir, MaxProcessOutputBytes: storetest.MaxProcessOutputBytes})
}

func openConfig(tb testing.TB, cfg store.Config) *store.JetStream {
	tb.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := store.OpenJetStream(tb.Context(), cfg)
	if err != nil {
		tb.Fatalf("OpenJetStream(%s) = %v", cfg.Dir, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close = %v", err)
		}
	})
	return s
}

func TestJetStream(t *testing.T) {
	storetest.Run(t, func(tb testing.TB) storetest.Store {
		return openJetStream(tb, tb.TempDir())
	})
}

func TestOpenJetStreamNeedsDir(t *testing.T) {
	if _, err := store.OpenJetStream(t.Context(), store.Config{}); !errors.Is(err, devops.ErrInvalid) {
		t.Errorf("OpenJetStream(no dir) = %v, want ErrInvalid", err)
	}
}

// TestJetStreamRestart checks that records, output, its end, and whether it
// was closed or truncated survive closing and reopening the store.
func TestJetStreamRestart(t *testing.T) {
	ctx := storetest.Context(t)
	dir := t.TempDir()
	s := openJetStream(t, dir)

	w := devops.Worker{ID: "w-1", Name: "alpha", Labels: map[string]string{"a": "b"}, State: devops.WorkerUp, LastSeen: time.Now()}
	p := devops.Process{ID: storetest.ProcessID(1), WorkerID: w.ID, State: devops.StateRunning, CreatedAt: time.Now(),
		Spec: devops.Spec{Argv: []string{"cat"}, Timeout: time.Minute}}
	if err := s.PutWorker(ctx, w); err != nil {
		t.Fatalf("PutWorker = %v", err)
	}
	if err := s.PutProcess(ctx, p); err != nil {
		t.Fatalf("PutProcess = %v", err)
	}
	running, done, truncated := storetest.ProcessID(1), storetest.ProcessID(2), storetest.ProcessID(3)
	chunk := func(off int64, stream devops.Stream, n int) devops.Chunk {
		c := devops.Chunk{Offset: off, Stream: stream, Data: make([]byte, n)}
		for i := range c.Data {
			c.Data[i] = byte(int(off) + i*7)
		}
		return c
	}
	var want [4][]byte
	for _, id := range []devops.ProcessID{running, done, truncated} {
		var off int64
		for i := range 10 {
			c := chunk(off, devops.Stream(1+i%2), 1000+i)
			if err := s.AppendOutput(ctx, id, c); err != nil {
				t.Fatalf("AppendOutput(%s) = %v", id, err)
			}
			want[id2n(id)] = append(want[id2n(id)], c.Data...)
			off = c.End()
		}
	}
	if err := s.CloseOutput(ctx, done); err != nil {
		t.Fatalf("CloseOutput = %v", err)
	}
	big := chunk(int64(len(want[3])), devops.Stdout, storetest.MaxProcessOutputBytes)
	if err := s.AppendOutput(ctx, truncated, big); !errors.Is(err, store.ErrOutputLimit) {
		t.Fatalf("AppendOutput(over the limit) = %v, want ErrOutputLimit", err)
	}
	want[3] = append(want[3], big.Data[:storetest.MaxProcessOutputBytes-len(want[3])]...)
	// Close without waiting for anything: Close itself must keep what was
	// accepted.
	if err := s.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}

	s = openJetStream(t, dir)
	ws, err := s.Workers(ctx)
	if err != nil || len(ws) != 1 || !reflect.DeepEqual(storetest.NormalizeWorker(ws[0]), storetest.NormalizeWorker(w)) {
		t.Errorf("Workers after restart = %+v, %v; want [%+v]", ws, err, w)
	}
	got, err := s.Process(ctx, p.ID)
	if err != nil || !reflect.DeepEqual(storetest.NormalizeProcess(got), storetest.NormalizeProcess(p)) {
		t.Errorf("Process after restart = %+v, %v; want %+v", got, err, p)
	}
	infos := map[devops.ProcessID]store.OutputInfo{
		running:   {End: int64(len(want[1]))},
		done:      {End: int64(len(want[2])), Closed: true},
		truncated: {End: storetest.MaxProcessOutputBytes, Truncated: true},
	}
	for id, wantInfo := range infos {
		if info, err := s.OutputInfo(ctx, id); err != nil || info != wantInfo {
			t.Errorf("OutputInfo(%s) after restart = %+v, %v; want %+v", id, info, err, wantInfo)
		}
		if end, err := s.OutputEnd(ctx, id); err != nil || end != wantInfo.End {
			t.Errorf("OutputEnd(%s) after restart = %d, %v; want %d", id, end, err, wantInfo.End)
		}
		var buf bytes.Buffer
		err := s.ReadOutput(ctx, id, 0, false, func(c devops.Chunk) error {
			if c.Offset != int64(buf.Len()) {
				t.Fatalf("ReadOutput(%s): chunk at %d, want %d", id, c.Offset, buf.Len())
			}
			buf.Write(c.Data)
			return nil
		})
		if err != nil || !bytes.Equal(buf.Bytes(), want[id2n(id)]) {
			t.Errorf("ReadOutput(%s) after restart = %d bytes, %v; want %d bytes", id, buf.Len(), err, len(want[id2n(id)]))
		}
	}
	// The running process's worker resumes where the store ended.
	c := chunk(int64(len(want[1])), devops.Stderr, 10)
	if err := s.AppendOutput(ctx, running, c); err != nil {
		t.Fatalf("AppendOutput after restart = %v", err)
	}
	if err := s.AppendOutput(ctx, done, chunk(int64(len(want[2])), devops.Stderr, 10)); !errors.Is(err, devops.ErrTerminal) {
		t.Errorf("AppendOutput(closed) after restart = %v, want ErrTerminal", err)
	}
	if err := s.AppendOutput(ctx, truncated, chunk(storetest.MaxProcessOutputBytes, devops.Stderr, 10)); err != nil {
		t.Errorf("AppendOutput(truncated) after restart = %v, want nil", err)
	}
	if end, err := s.OutputEnd(ctx, running); err != nil || end != c.End() {
		t.Errorf("OutputEnd after resume = %d, %v; want %d", end, err, c.End())
	}
}

// TestJetStreamSkipRestart: the end that lost output moved on is where a
// restarted store expects the next chunk.
func TestJetStreamSkipRestart(t *testing.T) {
	ctx := storetest.Context(t)
	dir := t.TempDir()
	s := openJetStream(t, dir)
	id := storetest.ProcessID(1)
	if err := s.AppendOutput(ctx, id, devops.Chunk{Stream: devops.Stdout, Data: []byte("kept\n")}); err != nil {
		t.Fatal(err)
	}
	if err := s.SkipOutput(ctx, id, 500); err != nil {
		t.Fatalf("SkipOutput = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openJetStream(t, dir)
	if end, err := s.OutputEnd(ctx, id); err != nil || end != 500 {
		t.Fatalf("OutputEnd after restart = %d, %v; want 500", end, err)
	}
	if err := s.AppendOutput(ctx, id, devops.Chunk{Offset: 500, Stream: devops.Stdout, Data: []byte("more\n")}); err != nil {
		t.Fatalf("AppendOutput at the skipped end after restart = %v", err)
	}
	var offsets []int64
	err := s.ReadOutput(ctx, id, 0, false, func(c devops.Chunk) error {
		offsets = append(offsets, c.Offset)
		return nil
	})
	if err != nil || !reflect.DeepEqual(offsets, []int64{0, 500}) {
		t.Errorf("ReadOutput after restart: chunks at %v, %v; want [0 500]", offsets, err)
	}
}

// TestJetStreamReadFromInterleaved reads two processes whose chunks are
// interleaved in the stream from many offsets: the lookup of where to
// start must land on the right chunk of the right process.
func TestJetStreamReadFromInterleaved(t *testing.T) {
	ctx := storetest.Context(t)
	s := openJetStream(t, t.TempDir())
	ids := []devops.ProcessID{storetest.ProcessID(1), storetest.ProcessID(2)}
	var want [2][]byte
	for i := range 200 {
		for j, id := range ids {
			c := devops.Chunk{Offset: int64(len(want[j])), Stream: devops.Stream(1 + i%2), Data: []byte(fmt.Sprintf("p%d chunk %d\n", j, i))}
			if err := s.AppendOutput(ctx, id, c); err != nil {
				t.Fatal(err)
			}
			want[j] = append(want[j], c.Data...)
		}
	}
	for j, id := range ids {
		for _, from := range []int64{0, 1, 13, 14, 15, int64(len(want[j]) / 2), int64(len(want[j]) - 1), int64(len(want[j]))} {
			var got []byte
			err := s.ReadOutput(ctx, id, from, false, func(c devops.Chunk) error {
				if c.Offset != from+int64(len(got)) {
					t.Fatalf("ReadOutput(%s, %d): chunk at %d after %d bytes", id, from, c.Offset, len(got))
				}
				got = append(got, c.Data...)
				return nil
			})
			if err != nil || !bytes.Equal(got, want[j][from:]) {
				t.Errorf("ReadOutput(%s, %d) = %q, %v; want %q", id, from, got, err, want[j][from:])
			}
		}
	}
}

func id2n(id devops.ProcessID) int {
	switch id {
	case storetest.ProcessID(1):
		return 1
	case storetest.ProcessID(2):
		return 2
	}
	return 3
}

func BenchmarkAppendOutput(b *testing.B) {
	s := openConfig(b, store.Config{Dir: b.TempDir()})
	ctx := context.Background()
	c := devops.Chunk{Stream: devops.Stdout, Data: bytes.Repeat([]byte("0123456789abcdef"), 2048)}
	b.SetBytes(int64(len(c.Data)))
	// A new process every 512 MiB stays below the default per-process
	// limit however long the benchmark runs.
	const perProcess = 512 << 20
	n := 0
	for b.Loop() {
		id := storetest.ProcessID(n)
		if err := s.AppendOutput(ctx, id, c); err != nil {
			b.Fatalf("AppendOutput = %v", err)
		}
		if c.Offset += int64(len(c.Data)); c.Offset >= perProcess {
			c.Offset = 0
			n++
		}
	}
	// Every byte is acknowledged before the clock stops.
	if _, err := s.OutputEnd(ctx, storetest.ProcessID(n)); err != nil {
		b.Fatalf("OutputEnd = %v", err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkReadOutputFollow measures a follower receiving output while it
// is appended, as `devops logs -f` does.
func BenchmarkReadOutputFollow(b *testing.B) {
	s := openConfig(b, store.Config{Dir: b.TempDir(), MaxProcessOutputBytes: 1 << 40})
	ctx := storetest.Context(b)
	id := storetest.ProcessID(1)
	c := devops.Chunk{Stream: devops.Stdout, Data: bytes.Repeat([]byte("0123456789abcdef"), 2048)}
	b.SetBytes(int64(len(c.Data)))
	var (
		wg       sync.WaitGroup
		received int64
		readErr  error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		readErr = s.ReadOutput(ctx, id, 0, true, func(c devops.Chunk) error {
			received = c.End()
			return nil
		})
	}()
	for b.Loop() {
		if err := s.AppendOutput(ctx, id, c); err != nil {
			b.Fatalf("AppendOutput = %v", err)
		}
		c.Offset += int64(len(c.Data))
	}
	if err := s.CloseOutput(ctx, id); err != nil {
		b.Fatalf("CloseOutput = %v", err)
	}
	wg.Wait()
	if readErr != nil || received != c.Offset {
		b.Fatalf("follower = %v at %d, want nil at %d", readErr, received, c.Offset)
	}
}

// TestJetStreamChunksStoredAsSent: processes appending large chunks at once,
// each reusing its chunk buffer (allowed once AppendOutput returns), read
// back byte for byte, while the store encodes into buffers it recycles.
func TestJetStreamChunksStoredAsSent(t *testing.T) {
	ctx := storetest.Context(t)
	s := openConfig(t, store.Config{Dir: t.TempDir(), MaxProcessOutputBytes: 64 << 20, MaxOutputBytes: 1 << 30})
	const procs, chunks, size = 4, 32, 256 << 10
	fill := func(buf []byte, p, i int) {
		for k := range buf {
			buf[k] = byte(p*31 + i*7 + k*13 + k>>8)
		}
	}
	var wg sync.WaitGroup
	for p := range procs {
		wg.Go(func() {
			buf := make([]byte, size)
			for i := range chunks {
				fill(buf, p, i)
				c := devops.Chunk{Offset: int64(i * size), Stream: devops.Stdout, Data: buf}
				if err := s.AppendOutput(ctx, storetest.ProcessID(p+1), c); err != nil {
					t.Errorf("AppendOutput(%d, %d) = %v", p, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	want := make([]byte, size)
	for p := range procs {
		var got []byte
		if err := s.ReadOutput(ctx, storetest.ProcessID(p+1), 0, false, func(c devops.Chunk) error {
			got = append(got, c.Data...)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(got) != chunks*size {
			t.Fatalf("process %d: read %d bytes, want %d", p, len(got), chunks*size)
		}
		for i := range chunks {
			fill(want, p, i)
			if !bytes.Equal(got[i*size:(i+1)*size], want) {
				t.Errorf("process %d: chunk %d differs from what was appended", p, i)
			}
		}
	}
}
