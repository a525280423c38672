package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/devops-platform/devops"
)

func open(t *testing.T, cfg Config) *JetStream {
	t.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := OpenJetStream(t.Context(), cfg)
	if err != nil {
		t.Fatalf("OpenJetStream = %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// crash stops s the way a killed manager stops: nothing synced, no clean mark.
func crash(s *JetStream) {
	s.closeOnce.Do(func() {
		close(s.output.stop)
		<-s.output.done
		// No more spares made in a directory the test removes; a killed
		// manager leaves its spares, which the next open removes.
		s.output.idxSpares.Close()
		s.output.outSpares.Close()
		s.shutdown()
	})
}

func readAll(t *testing.T, s *JetStream, id devops.ProcessID) []byte {
	t.Helper()
	var got []byte
	if err := s.ReadOutput(t.Context(), id, 0, false, func(c devops.Chunk) error {
		got = append(got, c.Data...)
		return nil
	}); err != nil {
		t.Fatalf("ReadOutput(%s) = %v", id, err)
	}
	return got
}

func appendChunks(t *testing.T, s *JetStream, id devops.ProcessID, chunks ...string) {
	t.Helper()
	var off int64
	for _, c := range chunks {
		if err := s.AppendOutput(t.Context(), id, devops.Chunk{Offset: off, Stream: devops.Stdout, Data: []byte(c)}); err != nil {
			t.Fatalf("AppendOutput = %v", err)
		}
		off += int64(len(c))
	}
}

// TestUncleanStopCutsLostOutput: after a stop that synced nothing, a chunk
// whose bytes did not reach the disk (here: zeroed) and what follows it are
// cut, so the worker resends from there; a clean stop checks nothing.
func TestUncleanStopCutsLostOutput(t *testing.T) {
	dir := t.TempDir()
	s := open(t, Config{Dir: dir})
	id := devops.ProcessID("p1")
	appendChunks(t, s, id, "first\n", "second\n", "third\n")
	crash(s)
	data := filepath.Join(dir, outputDirName, "p1.out")
	f, err := os.OpenFile(data, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 7), 6); err != nil { // "second\n" lost
		t.Fatal(err)
	}
	f.Close()

	s = open(t, Config{Dir: dir})
	if end, err := s.OutputEnd(t.Context(), id); err != nil || end != 6 {
		t.Fatalf("OutputEnd after an unclean stop = %d, %v; want 6", end, err)
	}
	if got := readAll(t, s, id); string(got) != "first\n" {
		t.Fatalf("output after an unclean stop = %q, want %q", got, "first\n")
	}
	appendChunks(t, s, id, "first\n", "again\n")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, Config{Dir: dir})
	if got := readAll(t, s, id); string(got) != "first\nagain\n" {
		t.Fatalf("output after resending and a clean stop = %q", got)
	}
}

// TestOutputOfThisRunIsNotChecked: after an unclean stop only outputs
// written before it are checked. One this run wrote and closed is loaded
// again without reading its bytes back: a change made behind the store's
// back (the zeroed chunk below) goes unnoticed, where a check would cut it.
// A fresh directory counts as unclean (never synced), so this is every new
// manager's case; retention loaded each old output it dropped and read it
// all back first.
func TestOutputOfThisRunIsNotChecked(t *testing.T) {
	dir := t.TempDir()
	s := open(t, Config{Dir: dir})
	id := devops.ProcessID("p1")
	appendChunks(t, s, id, "first\n", "second\n")
	if err := s.CloseOutput(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, outputDirName, "p1.out"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 7), 6); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got := readAll(t, s, id); len(got) != 13 {
		t.Fatalf("output written by this run = %q, want all 13 bytes, unchecked", got)
	}
}

// TestRetentionDropsOldestClosedOutput: past MaxOutputBytes the oldest
// closed output goes whole, keeping its end; open output stays.
func TestRetentionDropsOldestClosedOutput(t *testing.T) {
	ctx := t.Context()
	s := open(t, Config{Dir: t.TempDir(), MaxOutputBytes: 1000})
	chunk := string(bytes.Repeat([]byte("x"), 300))
	open1, old, newer := devops.ProcessID("open"), devops.ProcessID("old"), devops.ProcessID("newer")
	appendChunks(t, s, open1, chunk)
	appendChunks(t, s, old, chunk)
	if err := s.CloseOutput(ctx, old); err != nil {
		t.Fatal(err)
	}
	appendChunks(t, s, newer, chunk)
	if err := s.CloseOutput(ctx, newer); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, old); len(got) != 300 {
		t.Fatalf("old output at 900 bytes stored = %d bytes, want 300", len(got))
	}
	appendChunks(t, s, open1, chunk, chunk) // 1200 bytes stored: old must go
	if got := readAll(t, s, old); len(got) != 0 {
		t.Errorf("oldest closed output past the limit = %d bytes, want dropped", len(got))
	}
	if info, err := s.OutputInfo(ctx, old); err != nil || info != (OutputInfo{End: 300, Closed: true}) {
		t.Errorf("OutputInfo(dropped) = %+v, %v; want end 300, closed", info, err)
	}
	for id, want := range map[devops.ProcessID]int{newer: 300, open1: 600} {
		if got := readAll(t, s, id); len(got) != want {
			t.Errorf("output of %s = %d bytes, want %d", id, len(got), want)
		}
	}
}

// TestEmptyOutputHasNoDataFile: a process that wrote nothing costs the
// store an index and no data file, and its output reads back closed and
// empty, before and after a restart; one byte makes the data file.
func TestEmptyOutputHasNoDataFile(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := open(t, Config{Dir: dir})
	if err := s.CloseOutput(ctx, "quiet"); err != nil {
		t.Fatal(err)
	}
	appendChunks(t, s, "talks", "x")
	outs, _ := filepath.Glob(filepath.Join(dir, "output", "*.out"))
	idxs, _ := filepath.Glob(filepath.Join(dir, "output", "*.idx"))
	if len(outs) != 1 || len(idxs) != 2 {
		t.Errorf("data files %v, indexes %v: want one data file (talks) and two indexes", outs, idxs)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, Config{Dir: dir})
	if info, err := s.OutputInfo(ctx, "quiet"); err != nil || info != (OutputInfo{Closed: true}) {
		t.Errorf("OutputInfo(quiet) after a restart = %+v, %v; want closed and empty", info, err)
	}
	if got := readAll(t, s, "quiet"); len(got) != 0 {
		t.Errorf("quiet output = %q", got)
	}
	if got := readAll(t, s, "talks"); string(got) != "x" {
		t.Errorf("talks output = %q", got)
	}
}

// TestOutputFilesFromSpares: an output's index and data file are spares
// made ahead, in nests of their own, and renamed into place; spares are
// not outputs, and Close removes them and their nests.
func TestOutputFilesFromSpares(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("spares are taken only on Linux")
	}
	ctx := t.Context()
	dir := t.TempDir()
	out := filepath.Join(dir, "output")
	s := open(t, Config{Dir: dir})
	spares := func(kind string) []string {
		found, _ := filepath.Glob(filepath.Join(out, ".spare-"+kind+"-nest-*", ".spare-"+kind+"-*"))
		return found
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(spares("idx")) != outputSpares || len(spares("out")) != outputSpares {
		if time.Now().After(deadline) {
			t.Fatalf("spares after 10s: %v %v, want %d of each", spares("idx"), spares("out"), outputSpares)
		}
		time.Sleep(time.Millisecond)
	}
	idx, err := os.Stat(spares("idx")[0])
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.Stat(spares("out")[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PrepareOutput(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	appendChunks(t, s, "p", "hello")
	for _, f := range []struct {
		path  string
		spare os.FileInfo
	}{{"p.idx", idx}, {"p.out", data}} {
		if st, err := os.Stat(filepath.Join(out, f.path)); err != nil || !os.SameFile(st, f.spare) {
			t.Errorf("%s is not the first spare (%v)", f.path, err)
		}
	}
	if got := readAll(t, s, "p"); string(got) != "hello" {
		t.Errorf("output = %q, want hello", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(out, ".spare-*")); len(left) != 0 {
		t.Errorf("spares or nests left after Close: %v", left)
	}
	s = open(t, Config{Dir: dir})
	if got := readAll(t, s, "p"); string(got) != "hello" {
		t.Errorf("output after a restart = %q, want hello", got)
	}
	if n := len(s.output.order); n != 1 {
		t.Errorf("%d outputs counted for retention, want 1 (%v)", n, s.output.order)
	}
}

// TestPrepareOutputMakesTheIndex: PrepareOutput creates the index (so
// the first chunk does not) and no data file; the output then reads back
// the same as one never prepared, after a restart too.
func TestPrepareOutputMakesTheIndex(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := open(t, Config{Dir: dir})
	if err := s.PrepareOutput(ctx, "p1"); err != nil {
		t.Fatal(err)
	}
	outs, _ := filepath.Glob(filepath.Join(dir, "output", "*.out"))
	idxs, _ := filepath.Glob(filepath.Join(dir, "output", "*.idx"))
	if len(outs) != 0 || len(idxs) != 1 {
		t.Errorf("data files %v, indexes %v after PrepareOutput: want one index and no data file", outs, idxs)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, Config{Dir: dir})
	if info, err := s.OutputInfo(ctx, "p1"); err != nil || info != (OutputInfo{}) {
		t.Errorf("OutputInfo(p1) after a restart = %+v, %v; want open and empty", info, err)
	}
	appendChunks(t, s, "p1", "x")
	if got := readAll(t, s, "p1"); string(got) != "x" {
		t.Errorf("p1 output = %q", got)
	}
}

// TestMigrateOutputStream: output an earlier version kept in the OUTPUT
// stream is in the files after the upgrade, and the stream is gone.
func TestMigrateOutputStream(t *testing.T) {
	dir := t.TempDir()
	ns, err := server.NewServer(&server.Options{DontListen: true, JetStream: true, StoreDir: dir, MaxPayload: maxPayload, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(opTimeout) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.InProcessServer(ns))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: outputStream, Subjects: []string{outputPrefix + ">"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	msg := func(kind byte, offset int64, data string) []byte {
		b := make([]byte, msgHeaderLen+len(data))
		b[0] = kind
		binary.BigEndian.PutUint64(b[2:], uint64(offset))
		copy(b[msgHeaderLen:], data)
		return b
	}
	odd, _ := key("odd id/1") // encoded: its subject differs from the id
	for _, m := range []struct {
		subj string
		data []byte
	}{
		{"p1", msg(byte(devops.Stdout), 0, "out\n")},
		{"p1", msg(byte(devops.Stderr), 4, "err\n")},
		{odd, msg(byte(devops.Stdout), 0, "odd\n")},
		{"p1", msg(kindSkipped, 100, "")},
		{"p1", msg(byte(devops.Stdout), 100, "late\n")},
		{"p1", msg(kindClosed, 105, "")},
		{"purged", msg(kindClosed, 4096, "")},
	} {
		if _, err := js.Publish(ctx, outputPrefix+m.subj, m.data); err != nil {
			t.Fatal(err)
		}
	}
	nc.Close()
	ns.Shutdown()
	ns.WaitForShutdown()

	s := open(t, Config{Dir: dir})
	if got := readAll(t, s, "p1"); string(got) != "out\nerr\nlate\n" {
		t.Errorf("migrated output = %q", got)
	}
	if info, err := s.OutputInfo(ctx, "p1"); err != nil || info != (OutputInfo{End: 105, Closed: true}) {
		t.Errorf("OutputInfo(p1) = %+v, %v; want end 105, closed", info, err)
	}
	if got := readAll(t, s, "odd id/1"); string(got) != "odd\n" {
		t.Errorf("migrated output of an encoded id = %q", got)
	}
	if info, err := s.OutputInfo(ctx, "purged"); err != nil || info != (OutputInfo{End: 4096, Closed: true}) {
		t.Errorf("OutputInfo(purged) = %+v, %v; want end 4096, closed", info, err)
	}
	if _, err := s.js.Stream(ctx, outputStream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("stream %s after the migration: %v, want gone", outputStream, err)
	}
}

// TestCloseEndsFollowers: a follower of output still open returns an
// error when the store closes, rather than wait for its context.
func TestCloseEndsFollowers(t *testing.T) {
	s := open(t, Config{Dir: t.TempDir()})
	id := devops.ProcessID("p1")
	appendChunks(t, s, id, "first\n")
	got := make(chan error, 1)
	read := make(chan struct{})
	go func() {
		got <- s.ReadOutput(t.Context(), id, 0, true, func(devops.Chunk) error {
			close(read)
			return nil
		})
	}()
	<-read
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err == nil {
			t.Error("ReadOutput after Close = nil, want an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ReadOutput still following 10s after Close")
	}
}

// TestForgetLeavesNothing: a forgotten process leaves no file and no
// message in the records' streams (no delete marker either), and stays
// forgotten after a restart.
func TestForgetLeavesNothing(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := open(t, Config{Dir: dir})
	for _, id := range []devops.ProcessID{"p1", "p2"} {
		if err := s.PutProcess(ctx, devops.Process{ID: id, State: devops.StateSucceeded}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutRun(ctx, devops.Run{ID: "r1", State: devops.RunSucceeded}); err != nil {
		t.Fatal(err)
	}
	appendChunks(t, s, "p1", "x")
	if err := s.CloseOutput(ctx, "p1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Forget(ctx, []devops.ProcessID{"p1"}, []devops.RunID{"r1"}); err != nil {
		t.Fatalf("Forget = %v", err)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "output", "p1.*")); len(files) != 0 {
		t.Errorf("files left of p1: %v", files)
	}
	for stream, want := range map[string]uint64{"KV_" + processBucket: 1, "KV_" + runBucket: 0} {
		st, err := s.js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs != want {
			t.Errorf("%s holds %d messages after Forget, want %d", stream, info.State.Msgs, want)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, Config{Dir: dir})
	ps, err := s.Processes(ctx)
	if err != nil || len(ps) != 1 || ps[0].ID != "p2" {
		t.Errorf("Processes() after a restart = %v, %v; want only p2", ps, err)
	}
	if rs, err := s.Runs(ctx); err != nil || len(rs) != 0 {
		t.Errorf("Runs() after a restart = %v, %v; want none", rs, err)
	}
}
