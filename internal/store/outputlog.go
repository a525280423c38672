package store

// The output log keeps each process's output in two plain files under
// <Dir>/output, beside the embedded server's data:
//
//	<key>.out  the bytes, each at its output offset (a skipped range is a hole)
//	<key>.idx  one fixed-size record per chunk or marker, in order
//
// Why not the JetStream stream that held output before: every byte went
// through the NATS client and server (two copies), a highwayhash on write
// and on every read, and an 8 MiB block cache in the manager's heap that a
// catch-up read filled and the collector then had to reclaim. In a profile
// of 1 GiB followed to its end, storing and reading back output took 45% of
// the manager's CPU, and those block buffers were most of a stalled
// follower's memory growth. Here a chunk is one pwrite and one small
// append, and a read is a pread from the page cache.
//
// Durability is what the stream gave: the files are written at once and
// synced every syncEvery and on Close, not per chunk. A manager crash loses
// nothing (the page cache keeps the writes); a machine crash may lose the
// last interval. Each chunk's record holds a CRC-32C of its bytes, so after
// an unclean stop the outputs written since the last sync are checked when
// first used and cut at the first chunk that did not reach the disk; a
// worker resends what follows from OutputEnd.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/spare"
)

const (
	outputDirName = "output"
	// recordLen is the size of an index record; see record.
	recordLen = 24
	// readPiece bounds the data ReadOutput hands fn at once: a worker's
	// largest chunk, so a reader sees the sizes it would see live.
	readPiece = 256 << 10
	// syncEvery is how often written output is synced to disk, as
	// JetStream's default sync interval did for the stream.
	syncEvery = 2 * time.Minute
	// cleanFile marks an output directory whose last Close synced
	// everything; syncedFile's modification time is the last sync.
	cleanFile  = "clean"
	syncedFile = "synced"
)

// Record kinds besides stdout and stderr chunks (devops.Stdout, Stderr).
const (
	kindTruncated byte = 0x10 // the per-process limit cut the output at offset
	kindClosed    byte = 0x11 // the output is complete; end is where it ended
	kindSkipped   byte = 0x12 // offset..end was lost by the worker before it was sent
	flagTruncated byte = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// record is one entry of an index file, recordLen bytes on disk:
//
//	byte 0      kind
//	byte 1      flags: flagTruncated
//	bytes 2-3   zero
//	bytes 4-7   CRC-32C of the chunk's bytes (chunks only), little endian
//	bytes 8-15  offset
//	bytes 16-23 end
type record struct {
	kind   byte
	flags  byte
	crc    uint32
	offset int64
	end    int64
}

func (r record) isChunk() bool {
	return r.kind == byte(devops.Stdout) || r.kind == byte(devops.Stderr)
}

func (r record) encode(b []byte) {
	b[0], b[1], b[2], b[3] = r.kind, r.flags, 0, 0
	binary.LittleEndian.PutUint32(b[4:], r.crc)
	binary.LittleEndian.PutUint64(b[8:], uint64(r.offset))
	binary.LittleEndian.PutUint64(b[16:], uint64(r.end))
}

func decodeRecord(b []byte) (record, error) {
	r := record{
		kind:   b[0],
		flags:  b[1],
		crc:    binary.LittleEndian.Uint32(b[4:]),
		offset: int64(binary.LittleEndian.Uint64(b[8:])),
		end:    int64(binary.LittleEndian.Uint64(b[16:])),
	}
	switch r.kind {
	case byte(devops.Stdout), byte(devops.Stderr), kindTruncated, kindClosed, kindSkipped:
	default:
		return r, fmt.Errorf("unknown record kind %d", r.kind)
	}
	if r.offset < 0 || r.end < r.offset {
		return r, fmt.Errorf("record range %d-%d", r.offset, r.end)
	}
	return r, nil
}

// outputLog holds the output of every process; see the top of this file.
type outputLog struct {
	dir        string
	maxProcess int64
	maxTotal   int64
	log        *slog.Logger
	// suspect is when an unclean stop may have lost writes: outputs whose
	// index changed after it, and before opened, are checked when loaded.
	// Zero after a clean stop.
	suspect time.Time
	opened  time.Time

	mu sync.Mutex // guards what follows; never held while taking a procOutput's mu
	// outputs holds the outputs in use (by a caller, or open for writes,
	// whose files stay open); the others are loaded again from disk.
	outputs map[string]*procOutput
	// sizes holds the bytes stored of every output with a data file, and
	// order their keys oldest first, for MaxOutputBytes (order may hold
	// keys sizes no longer has).
	sizes map[string]int64
	order []string
	total int64
	dirty map[string]bool // written since the last sync

	// Index and data files made ahead: the first record of an output, and
	// its first chunk, rename one into place instead of creating it, which
	// was on the path of a command's first byte (see package spare).
	idxSpares, outSpares *spare.Pool

	stop chan struct{}
	done chan struct{}
}

// Spares of each kind kept made ahead: a burst of starts past them
// creates its own. They are made in outputNests directories apart
// (spare.NewNested).
const (
	outputSpares = 4
	outputNests  = 16
)

// The names of the spare files; neither starts with the other.
const (
	idxSparePrefix = ".spare-idx-"
	outSparePrefix = ".spare-out-"
)

// openOrCreate opens path with flag (for writes), renaming a spare from
// pool into place when it does not exist yet.
func openOrCreate(pool *spare.Pool, path string, flag int) (*os.File, error) {
	if pool.Take(path) {
		return os.OpenFile(path, flag, 0)
	}
	return os.OpenFile(path, flag|os.O_CREATE, 0o600)
}

// procOutput is one process's output.
type procOutput struct {
	key string

	// users counts callers between get and release, and writing says its
	// files are open for writes; both guarded by outputLog.mu.
	users   int
	writing bool

	mu        sync.Mutex // serialises writers and guards what follows
	loaded    bool       // the fields below reflect the files
	recs      []record   // the index; only ever appended to, or replaced
	gen       int        // counts replacements of recs, so readers find their place again
	end       int64
	closed    bool
	truncated bool
	out, idx  *os.File      // open while the output takes writes (out once it has a byte)
	changed   chan struct{} // closed when recs or closed change, then replaced
}

func openOutputLog(dir string, maxProcess, maxTotal int64, log *slog.Logger) (*outputLog, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	l := &outputLog{
		dir: dir, maxProcess: maxProcess, maxTotal: maxTotal, log: log,
		outputs: make(map[string]*procOutput),
		sizes:   make(map[string]int64),
		dirty:   make(map[string]bool),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		opened:  time.Now(),
	}
	if err := os.Remove(filepath.Join(dir, cleanFile)); errors.Is(err, fs.ErrNotExist) {
		// Not stopped cleanly (or new): what changed since the last sync
		// may not be on disk.
		if st, err := os.Stat(filepath.Join(dir, syncedFile)); err == nil {
			// A second early: the kernel stamps files with a coarse clock,
			// and a write that marked its output dirty just after a sync
			// took the set waits for the next one.
			l.suspect = st.ModTime().Add(-time.Second)
		} else {
			l.suspect = time.Unix(1, 0) // never synced: check everything
		}
	} else if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	type aged struct {
		key string
		mod time.Time
	}
	var found []aged
	for _, e := range entries {
		key, ok := strings.CutSuffix(e.Name(), ".out")
		if !ok {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		// The file's size: a skipped range (a hole) counts as written,
		// which only makes retention start a little early.
		l.sizes[key] = info.Size()
		l.total += info.Size()
		found = append(found, aged{key, info.ModTime()})
	}
	slices.SortFunc(found, func(a, b aged) int { return a.mod.Compare(b.mod) })
	for _, a := range found {
		l.order = append(l.order, a.key)
	}
	l.idxSpares = spare.NewNested(dir, idxSparePrefix, outputNests, outputSpares, spare.EmptyFile, log)
	l.outSpares = spare.NewNested(dir, outSparePrefix, outputNests, outputSpares, spare.EmptyFile, log)
	go l.syncLoop()
	l.enforce()
	return l, nil
}

func (l *outputLog) path(key, ext string) string { return filepath.Join(l.dir, key+ext) }

// close syncs what was written and marks the directory clean.
func (l *outputLog) close() error {
	close(l.stop)
	<-l.done
	l.idxSpares.Close()
	l.outSpares.Close()
	l.mu.Lock()
	var open []*procOutput
	for _, p := range l.outputs {
		open = append(open, p)
	}
	l.mu.Unlock()
	for _, p := range open {
		p.mu.Lock()
		l.closeFilesLocked(p)
		p.mu.Unlock()
	}
	if err := l.sync(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(l.dir, cleanFile), nil, 0o600)
}

func (l *outputLog) syncLoop() {
	defer close(l.done)
	t := time.NewTicker(syncEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			if err := l.sync(); err != nil {
				l.log.Error("sync output", logKeyError, err)
			}
		}
	}
}

// sync writes the outputs changed since the last sync to disk, then
// records the time it started: what changed before it is safe.
func (l *outputLog) sync() error {
	started := time.Now()
	l.mu.Lock()
	dirty := l.dirty
	l.dirty = make(map[string]bool)
	l.mu.Unlock()
	var errs []error
	for key := range dirty {
		for _, ext := range []string{".out", ".idx"} {
			f, err := os.Open(l.path(key, ext))
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted meanwhile
			}
			if err == nil {
				err = f.Sync()
				f.Close()
			}
			if err != nil {
				errs = append(errs, err)
				l.mu.Lock()
				l.dirty[key] = true // for the next sync
				l.mu.Unlock()
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	synced := filepath.Join(l.dir, syncedFile)
	if err := os.WriteFile(synced, nil, 0o600); err != nil {
		return err
	}
	return os.Chtimes(synced, started, started)
}

// get returns the output of key, counted as in use until release.
func (l *outputLog) get(key string) *procOutput {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.outputs[key]
	if p == nil {
		p = &procOutput{key: key, changed: make(chan struct{})}
		l.outputs[key] = p
	}
	p.users++
	return p
}

// release ends a use from get. The caller holds p.mu.
func (l *outputLog) release(p *procOutput) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p.users--
	if p.users == 0 && !p.writing && l.outputs[p.key] == p {
		delete(l.outputs, p.key)
	}
}

// locked returns the output of id, loaded and locked, in use until
// unlock.
func (l *outputLog) locked(id devops.ProcessID) (*procOutput, error) {
	key, err := key(string(id))
	if err != nil {
		return nil, err
	}
	p := l.get(key)
	p.mu.Lock()
	if err := l.loadLocked(p); err != nil {
		l.unlock(p)
		return nil, err
	}
	return p, nil
}

func (l *outputLog) unlock(p *procOutput) {
	l.release(p)
	p.mu.Unlock()
}

// loadLocked reads p's index, once, checking the chunks written since the
// last sync when the last stop was not clean.
func (l *outputLog) loadLocked(p *procOutput) error {
	if p.loaded {
		return nil
	}
	b, err := os.ReadFile(l.path(p.key, ".idx"))
	if errors.Is(err, fs.ErrNotExist) {
		p.replaceLocked(nil)
		p.loaded = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("read index: %w", err)
	}
	n := len(b) / recordLen
	recs := make([]record, 0, n)
	for i := range n {
		r, err := decodeRecord(b[i*recordLen:])
		if err != nil {
			l.log.Warn("output index damaged; cut", logKeyProcessID, p.key, "record", i, logKeyError, err)
			break
		}
		recs = append(recs, r)
	}
	if !l.suspect.IsZero() {
		// An output written since this log was opened was loaded (and
		// checked) before that write: checking it again read back every
		// byte of it, as retention did for each old output it dropped.
		if st, err := os.Stat(l.path(p.key, ".idx")); err == nil && !st.ModTime().Before(l.suspect) && st.ModTime().Before(l.opened) {
			recs = l.check(p.key, recs)
		}
	}
	if len(recs)*recordLen != len(b) {
		// A torn or damaged tail: drop it so appends follow whole records.
		if err := os.Truncate(l.path(p.key, ".idx"), int64(len(recs)*recordLen)); err != nil {
			return fmt.Errorf("cut index: %w", err)
		}
	}
	p.replaceLocked(recs)
	p.loaded = true
	return nil
}

// check returns the records up to the first chunk whose bytes on disk do
// not match its CRC: the machine stopped before they were written.
func (l *outputLog) check(key string, recs []record) []record {
	f, err := os.Open(l.path(key, ".out"))
	if err != nil {
		f = nil
	}
	if f != nil {
		defer f.Close()
	}
	buf := make([]byte, readPiece)
	for i, r := range recs {
		if !r.isChunk() {
			continue
		}
		ok := f != nil
		var sum uint32
		for off := r.offset; ok && off < r.end; {
			n := min(int64(len(buf)), r.end-off)
			if _, err := f.ReadAt(buf[:n], off); err != nil {
				ok = false
				break
			}
			sum = crc32.Update(sum, castagnoli, buf[:n])
			off += n
		}
		if !ok || sum != r.crc {
			l.log.Warn("output lost in an unclean stop; cut", logKeyProcessID, key, "offset", r.offset)
			return recs[:i]
		}
	}
	return recs
}

// replaceLocked sets p's index to recs and what follows from it.
func (p *procOutput) replaceLocked(recs []record) {
	p.recs = recs
	p.gen++
	p.end, p.closed, p.truncated = 0, false, false
	for _, r := range recs {
		p.end = max(p.end, r.end)
		switch r.kind {
		case kindClosed:
			p.closed = true
			p.truncated = p.truncated || r.flags&flagTruncated != 0
		case kindTruncated:
			p.truncated = true
		}
	}
	p.notifyLocked()
}

func (p *procOutput) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// closeFilesLocked closes p's files, if open; the caller holds p.mu.
func (l *outputLog) closeFilesLocked(p *procOutput) {
	if p.idx == nil {
		return
	}
	if p.out != nil {
		p.out.Close()
	}
	p.idx.Close()
	p.out, p.idx = nil, nil
	l.mu.Lock()
	p.writing = false
	l.mu.Unlock()
}

// openIndexLocked opens p's index for appends, creating it, unless it is
// open already.
func (l *outputLog) openIndexLocked(p *procOutput) error {
	if p.idx != nil {
		return nil
	}
	idx, err := openOrCreate(l.idxSpares, l.path(p.key, ".idx"), os.O_WRONLY|os.O_APPEND)
	if err != nil {
		return fmt.Errorf("open index: %w", err)
	}
	p.idx = idx
	l.mu.Lock()
	p.writing = true
	l.mu.Unlock()
	return nil
}

// writeLocked appends r to p's index, after writing data at r.offset in
// its data file when r is a chunk, and returns the bytes it stored.
func (l *outputLog) writeLocked(p *procOutput, r record, data []byte) error {
	if err := l.openIndexLocked(p); err != nil {
		return err
	}
	// The data file only once there is data: a command with no output
	// (`true`, most of a fleet's `systemctl restart`s) costs one file, not
	// two. Retention, here and at start, counts outputs by that file.
	if len(data) > 0 && p.out == nil {
		out, err := openOrCreate(l.outSpares, l.path(p.key, ".out"), os.O_RDWR)
		if err != nil {
			return fmt.Errorf("open output: %w", err)
		}
		p.out = out
		l.mu.Lock()
		if _, ok := l.sizes[p.key]; !ok {
			l.sizes[p.key] = 0
			l.order = append(l.order, p.key)
		}
		l.mu.Unlock()
	}
	if len(data) > 0 {
		r.crc = crc32.Checksum(data, castagnoli)
		if _, err := p.out.WriteAt(data, r.offset); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	}
	var b [recordLen]byte
	r.encode(b[:])
	if _, err := p.idx.Write(b[:]); err != nil {
		// The index may end in part of a record: read it again.
		p.loaded = false
		l.closeFilesLocked(p)
		return fmt.Errorf("write index: %w", err)
	}
	p.recs = append(p.recs, r)
	p.end = max(p.end, r.end)
	p.notifyLocked()
	l.mu.Lock()
	l.sizes[p.key] += int64(len(data))
	l.total += int64(len(data))
	l.dirty[p.key] = true
	l.mu.Unlock()
	return nil
}

// openForWrite returns p locked for a write; ErrTerminal once closed.
func (l *outputLog) openForWrite(ctx context.Context, id devops.ProcessID) (*procOutput, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := l.locked(id)
	if err != nil {
		return nil, err
	}
	if p.closed {
		l.unlock(p)
		return nil, fmt.Errorf("%w: output closed", devops.ErrTerminal)
	}
	return p, nil
}

// prepare creates the index of id's output ahead of its first record.
func (l *outputLog) prepare(ctx context.Context, id devops.ProcessID) error {
	p, err := l.openForWrite(ctx, id)
	if err != nil {
		return err
	}
	defer l.unlock(p)
	return l.openIndexLocked(p)
}

func (l *outputLog) append(ctx context.Context, id devops.ProcessID, c devops.Chunk) error {
	if err := checkChunk(c); err != nil {
		return err
	}
	if len(c.Data) == 0 {
		return nil
	}
	err := l.appendChunk(ctx, id, c)
	l.enforce()
	return err
}

func (l *outputLog) appendChunk(ctx context.Context, id devops.ProcessID, c devops.Chunk) error {
	p, err := l.openForWrite(ctx, id)
	if err != nil {
		return err
	}
	defer l.unlock(p)
	if p.truncated {
		return nil
	}
	c, cut, err := fitChunk(c, p.end, l.maxProcess)
	if err != nil {
		return err
	}
	if len(c.Data) > 0 {
		if err := l.writeLocked(p, record{kind: byte(c.Stream), offset: c.Offset, end: c.End()}, c.Data); err != nil {
			return err
		}
	}
	if !cut {
		return nil
	}
	if err := l.writeLocked(p, record{kind: kindTruncated, flags: flagTruncated, offset: p.end, end: p.end}, nil); err != nil {
		return err
	}
	p.truncated = true
	l.log.Warn("process output truncated", logKeyProcessID, id, "limit", l.maxProcess)
	return ErrOutputLimit
}

func (l *outputLog) skip(ctx context.Context, id devops.ProcessID, to int64) error {
	p, err := l.openForWrite(ctx, id)
	if err != nil {
		return err
	}
	defer l.unlock(p)
	if p.truncated || to <= p.end {
		return nil
	}
	return l.writeLocked(p, record{kind: kindSkipped, offset: p.end, end: to}, nil)
}

// closeOutput marks the output complete; with purge it first drops the
// data, keeping only where it ended.
func (l *outputLog) closeOutput(ctx context.Context, id devops.ProcessID, purge bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := l.locked(id)
	if err != nil {
		return err
	}
	defer l.unlock(p)
	if purge {
		return l.purgeLocked(p)
	}
	if p.closed {
		return nil
	}
	var flags byte
	if p.truncated {
		flags = flagTruncated
	}
	if err := l.writeLocked(p, record{kind: kindClosed, flags: flags, offset: p.end, end: p.end}, nil); err != nil {
		return err
	}
	p.closed = true
	l.closeFilesLocked(p)
	return nil
}

// purgeLocked replaces p's files with an index of one closing record.
func (l *outputLog) purgeLocked(p *procOutput) error {
	l.closeFilesLocked(p)
	var flags byte
	if p.truncated {
		flags = flagTruncated
	}
	r := record{kind: kindClosed, flags: flags, offset: p.end, end: p.end}
	var b [recordLen]byte
	r.encode(b[:])
	tmp := l.path(p.key, ".idx.tmp")
	if err := os.WriteFile(tmp, b[:], 0o600); err != nil {
		return fmt.Errorf("purge: %w", err)
	}
	if err := os.Rename(tmp, l.path(p.key, ".idx")); err != nil {
		return fmt.Errorf("purge: %w", err)
	}
	if err := os.Remove(l.path(p.key, ".out")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("purge: %w", err)
	}
	p.replaceLocked([]record{r})
	l.mu.Lock()
	l.total -= l.sizes[p.key]
	delete(l.sizes, p.key)
	l.dirty[p.key] = true
	l.mu.Unlock()
	return nil
}

// enforce drops whole outputs, oldest first, while the total stored
// exceeds MaxOutputBytes. Only closed outputs go: one still written to is
// bounded by the per-process limit, and dropping its start would leave a
// follower nothing to resume from.
func (l *outputLog) enforce() {
	l.mu.Lock()
	if l.total <= l.maxTotal {
		l.mu.Unlock()
		return
	}
	l.order = slices.DeleteFunc(l.order, func(k string) bool { _, ok := l.sizes[k]; return !ok })
	candidates := slices.Clone(l.order)
	l.mu.Unlock()
	for _, k := range candidates {
		l.mu.Lock()
		over := l.total > l.maxTotal
		p := l.outputs[k]
		writing := p != nil && p.writing
		l.mu.Unlock()
		if !over {
			return
		}
		if writing {
			continue
		}
		if err := l.dropClosed(k); err != nil {
			l.log.Error("drop old output", logKeyProcessID, k, logKeyError, err)
		}
	}
}

// dropClosed purges the output of key if it is closed.
func (l *outputLog) dropClosed(key string) error {
	p := l.get(key)
	p.mu.Lock()
	defer l.unlock(p)
	if err := l.loadLocked(p); err != nil {
		return err
	}
	if !p.closed || p.idx != nil {
		return nil
	}
	return l.purgeLocked(p)
}

func (l *outputLog) info(ctx context.Context, id devops.ProcessID) (OutputInfo, error) {
	if err := ctx.Err(); err != nil {
		return OutputInfo{}, err
	}
	p, err := l.locked(id)
	if err != nil {
		return OutputInfo{}, err
	}
	defer l.unlock(p)
	return OutputInfo{End: p.end, Closed: p.closed, Truncated: p.truncated}, nil
}

// read calls fn with the output of id past from; see JetStream.ReadOutput.
func (l *outputLog) read(ctx context.Context, id devops.ProcessID, from int64, follow bool, fn func(devops.Chunk) error) error {
	if from < 0 {
		return fmt.Errorf("%w: negative offset %d", devops.ErrOutOfRange, from)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := l.locked(id)
	if err != nil {
		return err
	}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		l.unlock(p)
	}()
	var data *os.File
	defer func() {
		if data != nil {
			data.Close()
		}
	}()
	// One buffer for every read, made with the file: fn does not keep what
	// it is given. A new one each time was zeroed, faulted in and collected
	// for every 256 KiB a follower read back (a sixth of the manager's CPU
	// while a follower more than the live tail behind read 1 GiB).
	var buf []byte
	pos, gen, i := from, -1, 0
	for {
		p.mu.Lock()
		if err := l.loadLocked(p); err != nil {
			p.mu.Unlock()
			return err
		}
		recs, changed := p.recs, p.changed
		if p.gen != gen {
			gen = p.gen
			i = sort.Search(len(recs), func(k int) bool { return recs[k].end > pos || recs[k].kind == kindClosed })
		}
		p.mu.Unlock()
		for ; i < len(recs); i++ {
			r := recs[i]
			if r.kind == kindClosed {
				return nil
			}
			if !r.isChunk() || r.end <= pos {
				continue
			}
			if data == nil {
				data, err = os.Open(l.path(p.key, ".out"))
				if errors.Is(err, fs.ErrNotExist) {
					return nil // retention dropped it meanwhile
				}
				if err != nil {
					return fmt.Errorf("open output: %w", err)
				}
				buf = make([]byte, readPiece)
			}
			for off := max(r.offset, pos); off < r.end; {
				b := buf[:min(readPiece, r.end-off)]
				if _, err := data.ReadAt(b, off); err != nil {
					if errors.Is(err, io.EOF) {
						err = io.ErrUnexpectedEOF
					}
					return fmt.Errorf("read output at %d: %w", off, err)
				}
				if err := fn(devops.Chunk{Offset: off, Stream: devops.Stream(r.kind), Data: b}); err != nil {
					return callbackError{err}
				}
				off += int64(len(b))
				pos = off
			}
		}
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.stop:
			return errors.New("store closed")
		case <-changed:
		}
	}
}

// remove deletes both files of the output of id: its process is forgotten
// (retention), long after its output was closed.
func (l *outputLog) remove(ctx context.Context, id devops.ProcessID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	k, err := key(string(id))
	if err != nil {
		return err
	}
	p := l.get(k)
	p.mu.Lock()
	defer l.unlock(p)
	l.closeFilesLocked(p)
	for _, ext := range []string{".out", ".idx"} {
		if err := os.Remove(l.path(k, ext)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove output: %w", err)
		}
	}
	// A reader still on it ends where the output ended; once none is, the
	// next look loads it from disk: nothing.
	p.loaded = true
	p.replaceLocked([]record{{kind: kindClosed, offset: p.end, end: p.end}})
	l.mu.Lock()
	l.total -= l.sizes[k]
	delete(l.sizes, k)
	delete(l.dirty, k)
	l.mu.Unlock()
	return nil
}
