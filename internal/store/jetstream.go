package store

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/devops-platform/devops"
)

// Config configures OpenJetStream.
type Config struct {
	// Dir holds the file storage; required. It is created when missing.
	Dir string
	// MaxOutputBytes caps the output kept across all processes; beyond it
	// the oldest output is dropped. Zero means DefaultMaxOutputBytes.
	MaxOutputBytes int64
	// MaxProcessOutputBytes caps the output kept per process; see
	// ErrOutputLimit. Zero means DefaultMaxProcessOutputBytes.
	MaxProcessOutputBytes int64
	// Logger receives the store's and the embedded server's logs; nil
	// discards them.
	Logger *slog.Logger
}

// Names in the embedded server. The output stream keeps one subject per
// process so that a reader filters on it and the server, not this code,
// skips the output of other processes.
const (
	outputStream  = "OUTPUT"
	outputPrefix  = "output."
	processBucket = "processes"
	workerBucket  = "workers"
)

const (
	// maxPayload must exceed the largest chunk (256 KiB) plus our header;
	// the NATS default of 1 MiB would do, 4 MiB leaves room for larger
	// records without a config change.
	maxPayload = 4 << 20
	// maxPendingPublishes bounds the output published but not yet
	// acknowledged: enough to keep the pipe full (32 chunks of up to
	// 256 KiB, as workers send them, is 8 MiB) without holding much memory
	// when the disk is slow. At 256 the manager held 64 MiB of output in
	// flight, most of scenario 5's growth.
	maxPendingPublishes = 32
	// readBufferBytes bounds what one reader asks the server for at once.
	readBufferBytes = 8 << 20
	// opTimeout bounds waits that have no caller context (Close, cleanup).
	opTimeout = 10 * time.Second
)

// Each output message starts with a fixed header, so that the payload stays
// binary-safe and no NATS headers need parsing on the hot path:
//
//	byte 0     kind: 1 stdout chunk, 2 stderr chunk, kindTruncated, kindClosed, kindSkipped
//	byte 1     flags: flagTruncated
//	bytes 2-9  offset, big endian; for markers the end of the output
//	bytes 10-  chunk data
const (
	msgHeaderLen       = 10
	kindTruncated byte = 0x10
	kindClosed    byte = 0x11
	kindSkipped   byte = 0x12 // the output before its offset, from the previous end, is lost
	flagTruncated byte = 1
)

// outputMsg is one decoded output message.
type outputMsg struct {
	kind      byte
	truncated bool
	offset    int64
	data      []byte
}

func (m outputMsg) end() int64 { return m.offset + int64(len(m.data)) }

func (m outputMsg) isChunk() bool {
	return m.kind == byte(devops.Stdout) || m.kind == byte(devops.Stderr)
}

// encodeMsg writes a message into b, of exactly its length.
func encodeMsg(b []byte, kind byte, truncated bool, offset int64, data []byte) []byte {
	b[0] = kind
	if truncated {
		b[1] = flagTruncated
	}
	binary.BigEndian.PutUint64(b[2:], uint64(offset))
	copy(b[msgHeaderLen:], data)
	return b
}

func decodeMsg(b []byte) (outputMsg, error) {
	if len(b) < msgHeaderLen {
		return outputMsg{}, fmt.Errorf("short output message (%d bytes)", len(b))
	}
	m := outputMsg{
		kind:      b[0],
		truncated: b[1]&flagTruncated != 0,
		offset:    int64(binary.BigEndian.Uint64(b[2:])),
		data:      b[msgHeaderLen:],
	}
	switch m.kind {
	case byte(devops.Stdout), byte(devops.Stderr), kindTruncated, kindClosed, kindSkipped:
		return m, nil
	}
	return outputMsg{}, fmt.Errorf("unknown output message kind %d", m.kind)
}

// JetStream is the store on an embedded NATS JetStream server. The server
// opens no network port: the client reaches it in process. Records live in
// two KV buckets, output in one stream with a subject per process.
//
// A JetStream assumes it is the only writer of its data: it caches the end
// of each open output to place and check chunks without asking the server.
// When several managers share a cluster, appends will need the server to
// check the expected last sequence of the subject instead.
//
// When MaxOutputBytes drops the oldest output, a process may lose its
// output entirely, including the mark that it was closed: OutputEnd then
// says 0 and a follower waits until its context ends. The manager knows such
// a process has ended from its record and should not follow it.
type JetStream struct {
	log                   *slog.Logger
	maxProcessOutputBytes int64
	ns                    *server.Server
	nc                    *nats.Conn
	js                    jetstream.JetStream
	output                jetstream.Stream
	processes             jetstream.KeyValue
	workers               jetstream.KeyValue

	mu sync.Mutex // guards outputs and failed
	// outputs caches what AppendOutput needs per process with open output;
	// entries go when the output is closed and are rebuilt from the stream
	// on demand, so the map stays as small as the set of running processes.
	outputs map[devops.ProcessID]*outputState
	// failed holds, per subject, an asynchronous publish error not yet
	// reported to a caller.
	failed map[string]error

	// pubMu orders output publishes with sent: buffers of the messages
	// published, oldest first, until the server has acknowledged them.
	// Each chunk is encoded into a buffer from bufs instead of a new one:
	// at 256 KiB a chunk, that was half the garbage the manager made while
	// relaying output.
	pubMu sync.Mutex
	sent  []*[]byte
	bufs  sync.Pool

	closeOnce sync.Once
	closeErr  error
}

// outputState is the writer's view of one process's output.
type outputState struct {
	mu        sync.Mutex // serialises writers of one process so offsets stay in order; guards the fields below
	loaded    bool       // the fields below reflect the stream
	end       int64
	closed    bool
	truncated bool
	// last is the newest publish not yet waited for. The server stores a
	// connection's messages in order, so once it is acknowledged every
	// earlier publish of this process was handled too. A future's channels
	// deliver once, so only holders of mu wait on it and clear it after.
	last jetstream.PubAckFuture
}

// OpenJetStream starts the embedded server on cfg.Dir, creating the buckets
// and the output stream when missing, and connects to it. Data written by an
// earlier JetStream on the same Dir is there again. It returns ErrInvalid
// when cfg.Dir is empty.
func OpenJetStream(ctx context.Context, cfg Config) (*JetStream, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("open store: %w: empty data dir", devops.ErrInvalid)
	}
	if cfg.MaxOutputBytes <= 0 {
		cfg.MaxOutputBytes = DefaultMaxOutputBytes
	}
	if cfg.MaxProcessOutputBytes <= 0 {
		cfg.MaxProcessOutputBytes = DefaultMaxProcessOutputBytes
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}

	ns, err := server.NewServer(&server.Options{
		ServerName: "devops-manager",
		DontListen: true, // clients connect in process only
		JetStream:  true,
		StoreDir:   cfg.Dir,
		MaxPayload: maxPayload,
		NoSigs:     true, // signals belong to the manager, not the library
		NoLog:      true, // logs go through SetLoggerV2 below
		// SyncInterval stays at JetStream's default: the file store writes
		// every message at once but fsyncs periodically, not per message.
		// A manager crash loses nothing; a machine crash may lose the last
		// interval, which workers resend from OutputEnd.
	})
	if err != nil {
		return nil, fmt.Errorf("open store: new server: %w", err)
	}
	ns.SetLoggerV2(serverLogger{log.With("component", "nats")}, false, false, false)
	ns.Start()
	s := &JetStream{
		log:                   log,
		maxProcessOutputBytes: cfg.MaxProcessOutputBytes,
		ns:                    ns,
		outputs:               make(map[devops.ProcessID]*outputState),
		failed:                make(map[string]error),
	}
	if err := s.init(ctx, cfg); err != nil {
		s.shutdown()
		return nil, fmt.Errorf("open store: %w", err)
	}
	return s, nil
}

func (s *JetStream) init(ctx context.Context, cfg Config) error {
	if !s.ns.ReadyForConnections(opTimeout) {
		return errors.New("embedded server not ready")
	}
	nc, err := nats.Connect(s.ns.ClientURL(),
		nats.InProcessServer(s.ns),
		nats.Name("devops-store"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			s.log.Warn("nats client error", logKeyError, err)
		}),
	)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	s.nc = nc
	s.js, err = jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(maxPendingPublishes),
		jetstream.WithPublishAsyncTimeout(time.Minute),
		jetstream.WithPublishAsyncErrHandler(s.publishFailed),
	)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	s.output, err = s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        outputStream,
		Description: "process output, one subject per process",
		Subjects:    []string{outputPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxBytes:    cfg.MaxOutputBytes,
		Discard:     jetstream.DiscardOld,
		MaxMsgSize:  maxPayload,
		// Direct gets let AppendOutput and ReadOutput look up the last
		// message of a process without a round trip through the API layer.
		AllowDirect: true,
	})
	if err != nil {
		return fmt.Errorf("create stream %s: %w", outputStream, err)
	}
	for _, b := range []struct {
		kv   *jetstream.KeyValue
		name string
	}{{&s.processes, processBucket}, {&s.workers, workerBucket}} {
		*b.kv, err = s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:  b.name,
			History: 1,
			Storage: jetstream.FileStorage,
		})
		if err != nil {
			return fmt.Errorf("create bucket %s: %w", b.name, err)
		}
	}
	return nil
}

// Close waits (up to a few seconds) for output still being published, then
// stops the client and the embedded server. Followers in ReadOutput return
// an error. Close is safe to call more than once.
func (s *JetStream) Close() error {
	s.closeOnce.Do(func() {
		if s.js != nil {
			select {
			case <-s.js.PublishAsyncComplete():
			case <-time.After(opTimeout):
				s.closeErr = fmt.Errorf("close store: %d output publishes unacknowledged", s.js.PublishAsyncPending())
			}
		}
		s.shutdown()
	})
	return s.closeErr
}

func (s *JetStream) shutdown() {
	if s.nc != nil {
		s.nc.Close()
	}
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// PutWorker stores w, replacing the record with the same ID.
func (s *JetStream) PutWorker(ctx context.Context, w devops.Worker) error {
	if err := put(ctx, s.workers, string(w.ID), w); err != nil {
		return fmt.Errorf("put worker %s: %w", w.ID, err)
	}
	return nil
}

// DeleteWorker removes a worker's record; removing an unknown one is no error.
func (s *JetStream) DeleteWorker(ctx context.Context, id devops.WorkerID) error {
	k, err := key(string(id))
	if err != nil {
		return fmt.Errorf("delete worker %s: %w", id, err)
	}
	if err := s.workers.Purge(ctx, k); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete worker %s: %w", id, err)
	}
	return nil
}

// Workers returns all worker records sorted by name (then ID).
func (s *JetStream) Workers(ctx context.Context) ([]devops.Worker, error) {
	ws, err := list[devops.Worker](ctx, s.workers)
	if err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	slices.SortFunc(ws, func(a, b devops.Worker) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(string(a.ID), string(b.ID)))
	})
	return ws, nil
}

// PutProcess stores p, replacing the record with the same ID.
func (s *JetStream) PutProcess(ctx context.Context, p devops.Process) error {
	if err := put(ctx, s.processes, string(p.ID), p); err != nil {
		return fmt.Errorf("put process %s: %w", p.ID, err)
	}
	return nil
}

// Process returns the record of process id, or an error wrapping
// ErrNotFound.
func (s *JetStream) Process(ctx context.Context, id devops.ProcessID) (devops.Process, error) {
	var p devops.Process
	k, err := key(string(id))
	if err != nil {
		return p, fmt.Errorf("get process %s: %w", id, err)
	}
	e, err := s.processes.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return p, fmt.Errorf("get process %s: %w", id, devops.ErrNotFound)
	}
	if err != nil {
		return p, fmt.Errorf("get process %s: %w", id, err)
	}
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return p, fmt.Errorf("get process %s: decode: %w", id, err)
	}
	return p, nil
}

// Processes returns all process records sorted by ID, which for UUIDv7 ids
// is creation order.
func (s *JetStream) Processes(ctx context.Context) ([]devops.Process, error) {
	ps, err := list[devops.Process](ctx, s.processes)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	slices.SortFunc(ps, func(a, b devops.Process) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return ps, nil
}

// put stores v as JSON. Records are the domain structs as they are: JSON
// keeps times to the nanosecond (in UTC when they were UTC) and durations
// as integers, and it tolerates added fields. Renaming a field of
// devops.Process or devops.Worker needs a migration here.
func put(ctx context.Context, kv jetstream.KeyValue, id string, v any) error {
	k, err := key(id)
	if err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	_, err = kv.Put(ctx, k, b)
	return err
}

// list reads every record of a bucket in one pass: a watcher delivers the
// last value of each key and then a nil marker, which costs one consumer
// instead of one request per key.
func list[T any](ctx context.Context, kv jetstream.KeyValue) ([]T, error) {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	var out []T
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("watcher stopped")
			}
			if e == nil {
				return out, nil
			}
			var v T
			if err := json.Unmarshal(e.Value(), &v); err != nil {
				return nil, fmt.Errorf("decode %s: %w", e.Key(), err)
			}
			out = append(out, v)
		}
	}
}

// subject is where the output of process id lives.
func subject(id devops.ProcessID) (string, error) {
	k, err := key(string(id))
	if err != nil {
		return "", err
	}
	return outputPrefix + k, nil
}

// publishFailed runs on the client's ack goroutine when an asynchronous
// publish fails. It must not take an outputState lock: a holder of that lock
// may be waiting for an ack this goroutine has still to deliver.
func (s *JetStream) publishFailed(_ jetstream.JetStream, m *nats.Msg, err error) {
	s.log.Error("store output", logKeySubject, m.Subject, logKeyError, err)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.failed[m.Subject]; !ok {
		s.failed[m.Subject] = err
	}
}

// takeFailure returns and forgets the pending publish error of subj.
func (s *JetStream) takeFailure(subj string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.failed[subj]
	delete(s.failed, subj)
	return err
}

// state returns the locked writer state of process id, loaded from the
// stream. The caller must unlock it.
func (s *JetStream) state(ctx context.Context, id devops.ProcessID, subj string) (*outputState, error) {
	s.mu.Lock()
	st, ok := s.outputs[id]
	if !ok {
		st = &outputState{}
		s.outputs[id] = st
	}
	s.mu.Unlock()

	st.mu.Lock()
	if err := s.settleLocked(st, subj); err != nil {
		st.mu.Unlock()
		return nil, err
	}
	if !st.loaded {
		if err := s.loadLocked(ctx, st, subj); err != nil {
			st.mu.Unlock()
			return nil, err
		}
	}
	return st, nil
}

// settleLocked reports an asynchronous publish failure of subj, if any, and
// then forgets what the state believed: the stream is the truth again.
func (s *JetStream) settleLocked(st *outputState, subj string) error {
	err := s.takeFailure(subj)
	if err == nil {
		return nil
	}
	st.loaded = false
	return fmt.Errorf("earlier output was not stored: %w", err)
}

// loadLocked fills st from the last message stored on subj.
func (s *JetStream) loadLocked(ctx context.Context, st *outputState, subj string) error {
	if err := s.waitLocked(ctx, st, subj); err != nil {
		return err
	}
	m, _, ok, err := s.lastMsg(ctx, subj)
	if err != nil {
		return err
	}
	st.loaded, st.end, st.closed, st.truncated = true, 0, false, false
	if ok {
		st.end, st.closed, st.truncated = m.end(), m.kind == kindClosed, m.truncated
	}
	return nil
}

// lastMsg returns the last output message of subj and its sequence; false
// when there is none.
func (s *JetStream) lastMsg(ctx context.Context, subj string) (outputMsg, uint64, bool, error) {
	raw, err := s.output.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return outputMsg{}, 0, false, nil
	}
	if err != nil {
		return outputMsg{}, 0, false, fmt.Errorf("last message: %w", err)
	}
	m, err := decodeMsg(raw.Data)
	if err != nil {
		return outputMsg{}, 0, false, fmt.Errorf("last message %d: %w", raw.Sequence, err)
	}
	return m, raw.Sequence, true, nil
}

// nextMsg returns the first output message of subj at or after sequence
// seq, and its sequence: a direct get, with no consumer.
func (s *JetStream) nextMsg(ctx context.Context, subj string, seq uint64) (outputMsg, uint64, error) {
	raw, err := s.output.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
	if err != nil {
		return outputMsg{}, 0, fmt.Errorf("message at or after %d: %w", seq, err)
	}
	m, err := decodeMsg(raw.Data)
	if err != nil {
		return outputMsg{}, 0, fmt.Errorf("message %d: %w", raw.Sequence, err)
	}
	return m, raw.Sequence, nil
}

// deliver calls fn with m's output from offset from on, if it is a chunk,
// and reports whether m closes the output.
func deliver(m outputMsg, from int64, fn func(devops.Chunk) error) (closed bool, err error) {
	if m.kind == kindClosed {
		return true, nil
	}
	if !m.isChunk() {
		return false, nil
	}
	if c, ok := trimChunk(devops.Chunk{Offset: m.offset, Stream: devops.Stream(m.kind), Data: m.data}, from); ok {
		if err := fn(c); err != nil {
			return false, callbackError{err}
		}
	}
	return false, nil
}

// waitLocked waits until the server handled every publish of st.
func (s *JetStream) waitLocked(ctx context.Context, st *outputState, subj string) error {
	if st.last == nil {
		return nil
	}
	select {
	case <-st.last.Ok():
	case err := <-st.last.Err():
		st.last = nil
		st.loaded = false
		s.takeFailure(subj) // reported here; do not report it twice
		return fmt.Errorf("output was not stored: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	}
	st.last = nil
	return s.settleLocked(st, subj)
}

// publishLocked sends one output message without waiting for its ack.
func (s *JetStream) publishLocked(ctx context.Context, st *outputState, subj string, kind byte, truncated bool, offset int64, data []byte) error {
	buf := s.buffer(msgHeaderLen + len(data))
	msg := &nats.Msg{Subject: subj, Data: encodeMsg(*buf, kind, truncated, offset, data)}
	for {
		s.pubMu.Lock()
		f, err := s.js.PublishMsgAsync(msg, jetstream.WithStallWait(time.Second))
		if err == nil {
			s.sent = append(s.sent, buf)
			s.recycleLocked()
		}
		s.pubMu.Unlock()
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			// The server is behind; wait for it as long as the caller
			// lets us rather than fail the output.
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		if err != nil {
			return err
		}
		st.last = f
		return nil
	}
}

// buffer returns a buffer of length n for a message.
func (s *JetStream) buffer(n int) *[]byte {
	if b, ok := s.bufs.Get().(*[]byte); ok && cap(*b) >= n {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, max(n, msgHeaderLen+256<<10)) // a worker's largest chunk
	return &b
}

// recycleLocked puts the buffers of acknowledged publishes back in the
// pool. The server handles one connection's publishes in order, so of the
// messages in sent all but the newest PublishAsyncPending are done (stored,
// or failed and reported to publishFailed): the client holds no more use
// for their data. The caller holds pubMu, so no publish comes in between.
func (s *JetStream) recycleLocked() {
	done := len(s.sent) - s.js.PublishAsyncPending()
	if done <= 0 {
		return
	}
	for i, b := range s.sent[:done] {
		s.bufs.Put(b)
		s.sent[i] = nil
	}
	s.sent = s.sent[done:]
}

// AppendOutput stores chunk c of process id. Bytes already stored are
// ignored, so a worker may resend from an earlier offset; a chunk starting
// past OutputEnd returns ErrOutOfRange. Past the per-process limit bytes are
// dropped and the call that crossed it returns ErrOutputLimit; later calls
// return nil. After CloseOutput it returns ErrTerminal. The chunk is
// published asynchronously: a failure to store it is returned by a later
// call for the same process. c.Data may be reused once it returns.
func (s *JetStream) AppendOutput(ctx context.Context, id devops.ProcessID, c devops.Chunk) error {
	if err := s.appendOutput(ctx, id, c); err != nil {
		return fmt.Errorf("append output %s: %w", id, err)
	}
	return nil
}

func (s *JetStream) appendOutput(ctx context.Context, id devops.ProcessID, c devops.Chunk) error {
	if err := checkChunk(c); err != nil {
		return err
	}
	if len(c.Data) == 0 {
		return nil
	}
	st, subj, err := s.openForWrite(ctx, id)
	if err != nil {
		return err
	}
	defer st.mu.Unlock()
	if st.truncated {
		return nil
	}
	c, cut, err := fitChunk(c, st.end, s.maxProcessOutputBytes)
	if err != nil {
		return err
	}
	if len(c.Data) > 0 {
		if err := s.publishLocked(ctx, st, subj, byte(c.Stream), false, c.Offset, c.Data); err != nil {
			return err
		}
		st.end = c.End()
	}
	if !cut {
		return nil
	}
	// Record the truncation in the stream so that it survives a restart.
	if err := s.publishLocked(ctx, st, subj, kindTruncated, true, st.end, nil); err != nil {
		return err
	}
	st.truncated = true
	s.log.Warn("process output truncated", logKeyProcessID, id, "limit", s.maxProcessOutputBytes)
	return ErrOutputLimit
}

// SkipOutput records that the output of process id from OutputEnd up to
// offset to is lost (the worker dropped it before it was sent): OutputEnd
// becomes to, the next chunk may start there, and readers pass over the
// range. An offset at or below OutputEnd changes nothing. After CloseOutput
// it returns ErrTerminal.
func (s *JetStream) SkipOutput(ctx context.Context, id devops.ProcessID, to int64) error {
	if err := s.skipOutput(ctx, id, to); err != nil {
		return fmt.Errorf("skip output %s: %w", id, err)
	}
	return nil
}

func (s *JetStream) skipOutput(ctx context.Context, id devops.ProcessID, to int64) error {
	st, subj, err := s.openForWrite(ctx, id)
	if err != nil {
		return err
	}
	defer st.mu.Unlock()
	if st.truncated || to <= st.end {
		return nil
	}
	// A marker, so that the new end survives a restart like a chunk's.
	if err := s.publishLocked(ctx, st, subj, kindSkipped, false, to, nil); err != nil {
		return err
	}
	st.end = to
	return nil
}

// openForWrite returns the state of process id's output, locked, and its
// subject, for a write; ErrTerminal once the output was closed. The caller
// unlocks st.mu.
func (s *JetStream) openForWrite(ctx context.Context, id devops.ProcessID) (*outputState, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	subj, err := subject(id)
	if err != nil {
		return nil, "", err
	}
	st, err := s.state(ctx, id, subj)
	if err != nil {
		return nil, "", err
	}
	if st.closed {
		s.releaseLocked(id, st)
		st.mu.Unlock()
		return nil, "", fmt.Errorf("%w: output closed", devops.ErrTerminal)
	}
	return st, subj, nil
}

// CloseOutput marks the output of process id complete: followers return
// once they delivered everything before it. It waits until the server
// stored all output of the process and returns any error storing it.
// Closing twice is not an error.
func (s *JetStream) CloseOutput(ctx context.Context, id devops.ProcessID) error {
	if err := s.closeOutput(ctx, id, false); err != nil {
		return fmt.Errorf("close output %s: %w", id, err)
	}
	return nil
}

// DeleteOutput drops the stored output of process id, for retention. The
// output counts as closed afterwards and OutputEnd still reports where it
// ended; readers get no chunks.
func (s *JetStream) DeleteOutput(ctx context.Context, id devops.ProcessID) error {
	if err := s.closeOutput(ctx, id, true); err != nil {
		return fmt.Errorf("delete output %s: %w", id, err)
	}
	return nil
}

func (s *JetStream) closeOutput(ctx context.Context, id devops.ProcessID, purge bool) error {
	subj, err := subject(id)
	if err != nil {
		return err
	}
	st, err := s.state(ctx, id, subj)
	if err != nil {
		return err
	}
	defer st.mu.Unlock()
	if err := s.waitLocked(ctx, st, subj); err != nil {
		return err
	}
	if st.closed && !purge {
		return nil
	}
	if purge {
		if err := s.output.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
			return fmt.Errorf("purge: %w", err)
		}
	}
	// The marker keeps the end offset and the truncation flag, so after a
	// restart (or a purge) both are known from the last message alone.
	if err := s.publishLocked(ctx, st, subj, kindClosed, st.truncated, st.end, nil); err != nil {
		return err
	}
	if err := s.waitLocked(ctx, st, subj); err != nil {
		return err
	}
	st.closed = true
	s.releaseLocked(id, st)
	return nil
}

// releaseLocked forgets the state of a closed output: it takes no more
// writes worth caching, and the stream answers the rare later question. This
// keeps the cache as small as the set of open outputs even when a restarted
// manager asks about every process it knows.
func (s *JetStream) releaseLocked(id devops.ProcessID, st *outputState) {
	if !st.closed || st.last != nil {
		return
	}
	s.mu.Lock()
	if s.outputs[id] == st {
		delete(s.outputs, id)
	}
	s.mu.Unlock()
}

// OutputEnd returns the offset just past the last stored chunk of process
// id (0 when there is none), after waiting for its pending output to be
// stored. A worker resuming its stream after a manager restart sends from
// there.
func (s *JetStream) OutputEnd(ctx context.Context, id devops.ProcessID) (int64, error) {
	info, err := s.outputInfo(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("output end %s: %w", id, err)
	}
	return info.End, nil
}

// OutputInfo returns the end, and whether the output of process id was
// closed or truncated, after waiting for its pending output to be stored.
func (s *JetStream) OutputInfo(ctx context.Context, id devops.ProcessID) (OutputInfo, error) {
	info, err := s.outputInfo(ctx, id)
	if err != nil {
		return info, fmt.Errorf("output info %s: %w", id, err)
	}
	return info, nil
}

func (s *JetStream) outputInfo(ctx context.Context, id devops.ProcessID) (OutputInfo, error) {
	subj, err := subject(id)
	if err != nil {
		return OutputInfo{}, err
	}
	st, err := s.state(ctx, id, subj)
	if err != nil {
		return OutputInfo{}, err
	}
	defer st.mu.Unlock()
	if err := s.waitLocked(ctx, st, subj); err != nil {
		return OutputInfo{}, err
	}
	s.releaseLocked(id, st)
	return OutputInfo{End: st.end, Closed: st.closed, Truncated: st.truncated}, nil
}

// flushOutput waits until output this store published for process id is
// stored, so that a reader sees what the same caller just appended.
func (s *JetStream) flushOutput(ctx context.Context, id devops.ProcessID, subj string) error {
	s.mu.Lock()
	st := s.outputs[id]
	s.mu.Unlock()
	if st == nil {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return s.waitLocked(ctx, st, subj)
}

// ReadOutput calls fn with the output of process id past offset from, in
// order, each byte once: a chunk straddling from is cut to start there. fn
// must not modify c.Data. Without follow it returns nil at the end of what
// is stored now; with follow it waits for more until the output is closed
// and fully delivered. It returns ctx.Err() when ctx ends, fn's error as
// is, and ErrOutOfRange when from is negative.
func (s *JetStream) ReadOutput(ctx context.Context, id devops.ProcessID, from int64, follow bool, fn func(devops.Chunk) error) error {
	err := s.readOutput(ctx, id, from, follow, fn)
	var fnErr callbackError
	switch {
	case errors.As(err, &fnErr):
		return fnErr.err
	case err != nil && ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return fmt.Errorf("read output %s: %w", id, err)
	}
	return nil
}

// callbackError carries fn's error out of readOutput unwrapped.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

func (s *JetStream) readOutput(ctx context.Context, id devops.ProcessID, from int64, follow bool, fn func(devops.Chunk) error) error {
	if from < 0 {
		return fmt.Errorf("%w: negative offset %d", devops.ErrOutOfRange, from)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	subj, err := subject(id)
	if err != nil {
		return err
	}
	if err := s.flushOutput(ctx, id, subj); err != nil {
		return err
	}
	// The last message says whether there is anything to read at all, and
	// where a non-following reader stops.
	last, lastSeq, ok, err := s.lastMsg(ctx, subj)
	if err != nil {
		return err
	}
	var startSeq uint64
	switch {
	case !ok:
		if !follow {
			return nil
		}
	case from >= last.end() && (!follow || last.kind == kindClosed):
		return nil
	default:
		if startSeq, err = s.seqPast(ctx, subj, from, last, lastSeq); err != nil {
			return err
		}
	}
	if !follow {
		return s.readStored(ctx, subj, from, startSeq, lastSeq, fn)
	}

	// An ordered consumer delivers the stored messages and then new ones as
	// they arrive, in stream order, recreating itself on any gap; it is
	// ephemeral and deleted below, so readers leave nothing behind.
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{subj},
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: 30 * time.Second,
	}
	if startSeq > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, startSeq
	}
	cons, err := s.js.OrderedConsumer(ctx, outputStream, cfg)
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxBytes(readBufferBytes))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	defer func() {
		it.Stop()
		// The server would drop the consumer after InactiveThreshold; doing
		// it now keeps many short reads from piling up consumers.
		if info := cons.CachedInfo(); info != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
			defer cancel()
			if err := s.js.DeleteConsumer(dctx, outputStream, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, nats.ErrConnectionClosed) {
				s.log.Debug("delete output consumer", logKeySubject, subj, logKeyError, err)
			}
		}
	}()

	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return err
		}
		m, err := decodeMsg(msg.Data())
		if err != nil {
			return err
		}
		if closed, err := deliver(m, from, fn); closed || err != nil {
			return err
		}
	}
}

// readStored calls fn with subj's stored output from offset from: the
// messages from sequence seq to lastSeq, one direct get each (the next
// message of subj at or after a sequence). A manager's follower that fell
// behind the in-memory tail reads this way once per catch-up; an ordered
// consumer, created and deleted for each such read, cost more CPU than the
// reading itself (a profile of 1 GiB followed to its end).
func (s *JetStream) readStored(ctx context.Context, subj string, from int64, seq, lastSeq uint64, fn func(devops.Chunk) error) error {
	for seq = max(seq, 1); seq <= lastSeq; {
		m, at, err := s.nextMsg(ctx, subj, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil // retention dropped the rest meanwhile
		}
		if err != nil {
			return fmt.Errorf("read stored output: %w", err)
		}
		if closed, err := deliver(m, from, fn); closed || err != nil {
			return err
		}
		seq = at + 1
	}
	return nil
}

// seqPast returns the stream sequence to read subj from so that the first
// message delivered is the first whose output reaches past offset from;
// last is subj's last message, at sequence lastSeq. Offsets grow with the
// sequence within a subject, so a binary search over sequences finds it
// in a few lookups instead of a replay of everything before from, which
// made a follower that fell behind a long output read it again and again.
func (s *JetStream) seqPast(ctx context.Context, subj string, from int64, last outputMsg, lastSeq uint64) (uint64, error) {
	if from == 0 {
		return 0, nil
	}
	if last.end() <= from {
		return lastSeq + 1, nil // only what comes next
	}
	// The answer is in [lo, hi]: the first subj message at or after it
	// reaches past from.
	lo, hi := uint64(1), lastSeq
	for lo < hi {
		mid := lo + (hi-lo)/2
		m, at, err := s.nextMsg(ctx, subj, mid)
		if err != nil {
			return 0, fmt.Errorf("look up offset %d: %w", from, err)
		}
		if m.end() > from {
			hi = mid
		} else {
			lo = at + 1
		}
	}
	return lo, nil
}

// serverLogger hands the embedded server's logs to slog. Notices are the
// server's chatter (startup banner, stream recovery) and go to debug.
type serverLogger struct{ log *slog.Logger }

func (l serverLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l serverLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l serverLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l serverLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
