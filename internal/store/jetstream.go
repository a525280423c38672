package store

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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

// Names in the embedded server. outputStream and outputPrefix name where
// earlier versions kept output, one subject per process; see migrateOutput.
const (
	outputStream  = "OUTPUT"
	outputPrefix  = "output."
	processBucket = "processes"
	workerBucket  = "workers"
)

const (
	// maxPayload leaves room for the largest output message earlier
	// versions stored (a 256 KiB chunk and its header), which a migration
	// reads back.
	maxPayload = 4 << 20
	// opTimeout bounds waits that have no caller context.
	opTimeout = 10 * time.Second
)

// Each output message of the old OUTPUT stream started with a fixed header:
//
//	byte 0     kind: 1 stdout chunk, 2 stderr chunk, kindTruncated, kindClosed, kindSkipped
//	byte 1     flags: flagTruncated
//	bytes 2-9  offset, big endian; for markers the end of the output
//	bytes 10-  chunk data
const msgHeaderLen = 10

// outputMsg is one decoded output message of the old OUTPUT stream.
type outputMsg struct {
	kind   byte
	offset int64
	data   []byte
}

func decodeMsg(b []byte) (outputMsg, error) {
	if len(b) < msgHeaderLen {
		return outputMsg{}, fmt.Errorf("short output message (%d bytes)", len(b))
	}
	return outputMsg{kind: b[0], offset: int64(binary.BigEndian.Uint64(b[2:])), data: b[msgHeaderLen:]}, nil
}

// JetStream is the store on an embedded NATS JetStream server, which
// opens no network port: the client reaches it in process. Records live in
// two KV buckets; output lives in plain files beside them (outputlog.go).
//
// A JetStream assumes it is the only writer of its data: it caches the end
// of each open output to place and check chunks.
//
// When MaxOutputBytes drops the oldest output, a closed process's output
// goes whole: OutputInfo still says where it ended and that it was closed,
// and readers get no chunks.
type JetStream struct {
	log       *slog.Logger
	ns        *server.Server
	nc        *nats.Conn
	js        jetstream.JetStream
	processes jetstream.KeyValue
	workers   jetstream.KeyValue
	output    *outputLog

	closeOnce sync.Once
	closeErr  error
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
		// every record at once but fsyncs periodically, not per record.
	})
	if err != nil {
		return nil, fmt.Errorf("open store: new server: %w", err)
	}
	ns.SetLoggerV2(serverLogger{log.With("component", "nats")}, false, false, false)
	ns.Start()
	s := &JetStream{log: log, ns: ns}
	s.output, err = openOutputLog(filepath.Join(cfg.Dir, outputDirName), cfg.MaxProcessOutputBytes, cfg.MaxOutputBytes, log)
	if err != nil {
		s.shutdown()
		return nil, fmt.Errorf("open store: output: %w", err)
	}
	if err := s.init(ctx); err != nil {
		s.output.close()
		s.shutdown()
		return nil, fmt.Errorf("open store: %w", err)
	}
	return s, nil
}

func (s *JetStream) init(ctx context.Context) error {
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
	s.js, err = jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	// The buckets first, the migration after: deleting an account's last
	// stream makes nats-server remove the account's directory in the
	// background, and a bucket created meanwhile failed ("could not create
	// storage directory": TestMigrateOutputStream failed so in CI once, and
	// 2 times in ~400 runs here, four at once; in 0 of 300 since).
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
	if err := s.migrateOutput(ctx); err != nil {
		return fmt.Errorf("move output out of stream %s: %w", outputStream, err)
	}
	return nil
}

// Close syncs the output to disk and stops the client and the embedded
// server. Followers in ReadOutput return an error. Close is safe to call
// more than once.
func (s *JetStream) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.output.close()
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

// migrateOutput moves output that an earlier version kept in the OUTPUT
// stream into the output log, then deletes the stream. Run again after an
// interruption, it appends nothing twice: a chunk already stored is
// ignored, and a closed output takes nothing more.
func (s *JetStream) migrateOutput(ctx context.Context) error {
	st, err := s.js.Stream(ctx, outputStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	s.log.Info("moving process output from the stream to files", "messages", info.State.Msgs, "bytes", info.State.Bytes)
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		raw, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("message %d: %w", seq, err)
		}
		id, err := idOfKey(strings.TrimPrefix(raw.Subject, outputPrefix))
		if err != nil {
			return fmt.Errorf("message %d: %w", seq, err)
		}
		m, err := decodeMsg(raw.Data)
		if err != nil {
			return fmt.Errorf("message %d: %w", seq, err)
		}
		switch m.kind {
		case byte(devops.Stdout), byte(devops.Stderr):
			err = s.output.append(ctx, id, devops.Chunk{Offset: m.offset, Stream: devops.Stream(m.kind), Data: m.data})
		case kindSkipped:
			err = s.output.skip(ctx, id, m.offset)
		case kindClosed:
			// A purged output kept only this marker: its end comes first.
			if err = s.output.skip(ctx, id, m.offset); err == nil {
				err = s.output.closeOutput(ctx, id, false)
			}
		}
		if err != nil && !errors.Is(err, ErrOutputLimit) && !errors.Is(err, devops.ErrTerminal) {
			return fmt.Errorf("message %d: %w", seq, err)
		}
	}
	return s.js.DeleteStream(ctx, outputStream)
}

// idOfKey reverses key.
func idOfKey(k string) (devops.ProcessID, error) {
	enc, ok := strings.CutPrefix(k, "=")
	if !ok {
		return devops.ProcessID(k), nil
	}
	b, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return "", fmt.Errorf("subject key %q: %w", k, err)
	}
	return devops.ProcessID(b), nil
}

// PrepareOutput readies the output of process id for its first chunk
// (creates its index file), so that AppendOutput does not: the manager
// calls it while the worker starts the command. Optional: AppendOutput
// does what it has not. After CloseOutput it returns ErrTerminal.
func (s *JetStream) PrepareOutput(ctx context.Context, id devops.ProcessID) error {
	if err := s.output.prepare(ctx, id); err != nil {
		return fmt.Errorf("prepare output %s: %w", id, err)
	}
	return nil
}

// AppendOutput stores chunk c of process id. Bytes already stored are
// ignored, so a worker may resend from an earlier offset; a chunk starting
// past OutputEnd returns ErrOutOfRange. Past the per-process limit bytes are
// dropped and the call that crossed it returns ErrOutputLimit; later calls
// return nil. After CloseOutput it returns ErrTerminal. c.Data may be reused
// once it returns.
func (s *JetStream) AppendOutput(ctx context.Context, id devops.ProcessID, c devops.Chunk) error {
	if err := s.output.append(ctx, id, c); err != nil {
		return fmt.Errorf("append output %s: %w", id, err)
	}
	return nil
}

// SkipOutput records that the output of process id from OutputEnd up to
// offset to is lost (the worker dropped it before it was sent): OutputEnd
// becomes to, the next chunk may start there, and readers pass over the
// range. An offset at or below OutputEnd changes nothing. After CloseOutput
// it returns ErrTerminal.
func (s *JetStream) SkipOutput(ctx context.Context, id devops.ProcessID, to int64) error {
	if err := s.output.skip(ctx, id, to); err != nil {
		return fmt.Errorf("skip output %s: %w", id, err)
	}
	return nil
}

// CloseOutput marks the output of process id complete: followers return
// once they delivered everything before it. Closing twice is not an error.
func (s *JetStream) CloseOutput(ctx context.Context, id devops.ProcessID) error {
	if err := s.output.closeOutput(ctx, id, false); err != nil {
		return fmt.Errorf("close output %s: %w", id, err)
	}
	return nil
}

// DeleteOutput drops the stored output of process id, for retention. The
// output counts as closed afterwards and OutputEnd still reports where it
// ended; readers get no chunks.
func (s *JetStream) DeleteOutput(ctx context.Context, id devops.ProcessID) error {
	if err := s.output.closeOutput(ctx, id, true); err != nil {
		return fmt.Errorf("delete output %s: %w", id, err)
	}
	return nil
}

// Forget deletes the records of processes and runs, and the processes'
// output, for retention: what is forgotten is as if it never was. The
// records' messages go from their streams with no delete marker left
// behind, so the streams do not grow with what was forgotten (the
// buckets' own Purge leaves a marker per key for good, and PurgeDeletes
// reads the whole bucket to drop them).
func (s *JetStream) Forget(ctx context.Context, processes []devops.ProcessID, runs []devops.RunID) error {
	var errs []error
	if len(processes) > 0 {
		st, err := s.js.Stream(ctx, "KV_"+processBucket)
		if err != nil {
			return fmt.Errorf("forget processes: %w", err)
		}
		for _, id := range processes {
			err := s.output.remove(ctx, id)
			if err == nil {
				err = purgeKey(ctx, st, processBucket, string(id))
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("forget process %s: %w", id, err))
			}
		}
	}
	if len(runs) > 0 {
		st, err := s.js.Stream(ctx, "KV_"+runBucket)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return errors.Join(errs...) // no run was ever stored
		}
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("forget runs: %w", err))...)
		}
		for _, id := range runs {
			if err := purgeKey(ctx, st, runBucket, string(id)); err != nil {
				errs = append(errs, fmt.Errorf("forget run %s: %w", id, err))
			}
		}
	}
	return errors.Join(errs...)
}

// purgeKey removes every message of one key from its bucket's stream.
func purgeKey(ctx context.Context, st jetstream.Stream, bucket, id string) error {
	k, err := key(id)
	if err != nil {
		return err
	}
	return st.Purge(ctx, jetstream.WithPurgeSubject("$KV."+bucket+"."+k))
}

// OutputEnd returns the offset just past the last stored chunk of process
// id (0 when there is none). A worker resuming its stream after a manager
// restart sends from there.
func (s *JetStream) OutputEnd(ctx context.Context, id devops.ProcessID) (int64, error) {
	info, err := s.output.info(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("output end %s: %w", id, err)
	}
	return info.End, nil
}

// OutputInfo returns the end, and whether the output of process id was
// closed or truncated.
func (s *JetStream) OutputInfo(ctx context.Context, id devops.ProcessID) (OutputInfo, error) {
	info, err := s.output.info(ctx, id)
	if err != nil {
		return info, fmt.Errorf("output info %s: %w", id, err)
	}
	return info, nil
}

// ReadOutput calls fn with the output of process id past offset from, in
// order, each byte once: a chunk straddling from is cut to start there. fn
// must not modify c.Data, nor keep it once it returns: the next chunk is
// read into the same buffer. Without follow it returns nil at the end of what
// is stored now; with follow it waits for more until the output is closed
// and fully delivered. It returns ctx.Err() when ctx ends, fn's error as
// is, and ErrOutOfRange when from is negative.
func (s *JetStream) ReadOutput(ctx context.Context, id devops.ProcessID, from int64, follow bool, fn func(devops.Chunk) error) error {
	err := s.output.read(ctx, id, from, follow, fn)
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

// callbackError carries fn's error out of the output log unwrapped.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

// serverLogger hands the embedded server's logs to slog. Notices are the
// server's chatter (startup banner, stream recovery) and go to debug.
type serverLogger struct{ log *slog.Logger }

func (l serverLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l serverLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l serverLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l serverLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
