// Package audit is the manager's durable audit log: one JSON line per
// action (who, what, where, when, with which result) appended to a file in
// the manager's data dir and synced before the call returns. A file that
// reaches its size is set aside under a name with the time, and the oldest
// of those are removed past a count, so that the log does not fill the
// disk. It imports only the standard library: a rotating writer such as
// lumberjack neither syncs nor reads back, which are the two things this
// log is for.
package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Entry is one recorded action. Secret environment values never reach it:
// it holds the argv, not the environment.
type Entry struct {
	Time      time.Time `json:"time"`
	Principal string    `json:"principal"` // "token:ID", "worker:NAME" or "anonymous"
	Role      string    `json:"role,omitempty"`
	Action    string    `json:"action"` // e.g. "run", "kill", "drain", "token.create"
	Argv      []string  `json:"argv,omitempty"`
	Workers   []string  `json:"workers,omitempty"`
	Target    string    `json:"target,omitempty"`
	Result    string    `json:"result"` // "ok" or the refusal
	Peer      string    `json:"peer,omitempty"`
	// Stdin describes the standard input sent with a command (run -i):
	// its length and SHA-256, never its bytes.
	Stdin string `json:"stdin,omitempty"`
}

// Rotation bounds what the log keeps on disk.
type Rotation struct {
	// MaxSize is how large the file grows before it is set aside as
	// PATH.<UTC time> and a new one started (0: it grows for good).
	MaxSize int64
	// Keep is how many set-aside files are kept; the oldest go first (0:
	// every one).
	Keep int
}

// rotatedTime names a set-aside file: fixed width, so that names sort as
// times do.
const rotatedTime = "20060102T150405.000000000Z"

// Log appends entries to one file (mode 0600).
//
// Appends that come while another's sync runs are written and synced
// together by the next (group commit): each returns once its own entry is
// on disk, as before, but concurrent runs no longer queue one sync each
// behind a mutex (0.24 ms at the median and 6.6 ms at the most on this
// project's test VM, more on disks with slower syncs, where it capped how
// many runs a second the manager could accept).
type Log struct {
	path string
	rot  Rotation

	fileMu   sync.Mutex           // serializes writes, syncs and rotations of f
	syncFile func(*os.File) error // (*os.File).Sync; a test's stand-in
	// swapMu is held shared by Tail while it reads, and by a rotation: a
	// Tail never reads a file twice, under both names.
	swapMu sync.RWMutex
	f      *os.File
	// written is how long f is: every byte before it was written, and the
	// file only grows, so Tail reads before it without holding fileMu.
	written atomic.Int64
	// block is how much Tail reads at a time, from the end back.
	block int

	mu       sync.Mutex // guards the fields below
	flushed  *sync.Cond // on mu: a batch was written and synced, or failed
	next     *batch     // collects entries for the next write
	flushing bool       // a batch is being written and synced
}

// batch is entries written and synced together.
type batch struct {
	data []byte
	done bool
	err  error
}

// maxField bounds what one entry holds of any request field, so that a
// hostile request cannot grow the log by megabytes per call.
const maxField = 4096

// Open opens (or creates) the log at path; rot bounds it.
func Open(path string, rot Rotation) (*Log, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	l := &Log{path: path, rot: rot, f: f, syncFile: (*os.File).Sync, next: &batch{}, block: 64 << 10}
	l.written.Store(fi.Size())
	l.flushed = sync.NewCond(&l.mu)
	return l, nil
}

// Append records e durably (written and synced). A zero Time is now.
func (l *Log) Append(e Entry) error {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Time = e.Time.UTC()
	e.Argv = clip(e.Argv)
	e.Workers = clip(e.Workers)
	e.Target = clipString(e.Target)
	e.Result = clipString(e.Result)
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	data = append(data, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.next
	b.data = append(b.data, data...)
	for !b.done {
		if l.flushing {
			l.flushed.Wait()
			continue
		}
		// Nobody is writing: write this batch, with whatever others put in
		// it meanwhile; entries that come now go to the next.
		l.flushing = true
		l.next = &batch{}
		l.mu.Unlock()
		err := l.write(b.data)
		l.mu.Lock()
		b.done, b.err = true, err
		l.flushing = false
		l.flushed.Broadcast()
	}
	return b.err
}

// write appends data to the file and syncs it, after setting the file
// aside if it is full. A rotation that fails is tried again at the next
// write; meanwhile the entries go on to the full file.
func (l *Log) write(data []byte) error {
	l.fileMu.Lock()
	defer l.fileMu.Unlock()
	var rotErr error
	if l.rot.MaxSize > 0 && l.written.Load() >= l.rot.MaxSize {
		rotErr = l.rotate()
	}
	n, err := l.f.Write(data)
	l.written.Add(int64(n)) // a torn entry too: Tail skips it, and the next starts after it
	if err != nil {
		return fmt.Errorf("append audit entry: %w", err)
	}
	if err := l.syncFile(l.f); err != nil {
		return fmt.Errorf("sync audit log: %w", err)
	}
	if rotErr != nil {
		return fmt.Errorf("audit entry written, but the full log was not set aside: %w", rotErr)
	}
	return nil
}

// rotate sets the full file aside as PATH.<time>, starts a new one at PATH
// and removes the oldest set-aside files past Keep. It runs under fileMu.
func (l *Log) rotate() error {
	// A Tail reading now must not find the full file set aside under its
	// new name while f is still it, and read it twice.
	l.swapMu.Lock()
	defer l.swapMu.Unlock()
	aside := l.path + "." + time.Now().UTC().Format(rotatedTime)
	if err := os.Rename(l.path, aside); err != nil {
		return fmt.Errorf("rotate audit log: %w", err)
	}
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_EXCL|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		os.Rename(aside, l.path) // writes go on to the full file, under its name
		return fmt.Errorf("rotate audit log: %w", err)
	}
	// Both names on disk before the next entry is acknowledged in the new
	// file: else a crash could leave it where the old one was.
	if err := syncDir(filepath.Dir(l.path)); err != nil {
		f.Close()
		os.Remove(l.path)
		os.Rename(aside, l.path)
		return fmt.Errorf("rotate audit log: %w", err)
	}
	l.f.Close()
	l.f = f
	l.written.Store(0)
	return l.prune()
}

// prune removes the oldest set-aside files past Keep.
func (l *Log) prune() error {
	if l.rot.Keep <= 0 {
		return nil
	}
	aside, err := l.setAside()
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range aside[:max(0, len(aside)-l.rot.Keep)] {
		if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("remove old audit logs: %w", errors.Join(errs...))
	}
	return nil
}

// setAside lists the set-aside files, oldest first.
func (l *Log) setAside() ([]string, error) {
	names, err := filepath.Glob(l.path + ".[0-9]*Z")
	if err != nil {
		return nil, fmt.Errorf("list audit logs: %w", err)
	}
	var aside []string
	for _, name := range names {
		if _, err := time.Parse(rotatedTime, name[len(l.path)+1:]); err == nil {
			aside = append(aside, name)
		}
	}
	slices.Sort(aside)
	return aside, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Tail returns the last n entries, oldest first, from the file and then
// the set-aside files, newest first. It reads back from the end only as far
// as they go, and waits for no write or sync: it once read the whole log
// under the lock that appends take, and a log of 200,000 entries held every
// run's audit entry, and so the run, for a second.
func (l *Log) Tail(n int) ([]Entry, error) {
	l.swapMu.RLock()
	defer l.swapMu.RUnlock()
	es, err := l.tailFile(nil, l.f, l.written.Load(), n) // newest first
	if err != nil {
		return nil, err
	}
	if len(es) < n {
		aside, err := l.setAside()
		if err != nil {
			return nil, err
		}
		for i := len(aside) - 1; i >= 0 && len(es) < n; i-- {
			if es, err = l.tailAside(es, aside[i], n); err != nil {
				return nil, err
			}
		}
	}
	slices.Reverse(es)
	return es, nil
}

// tailAside adds to es, newest first, the last entries of a set-aside file.
// A file that a rotation removed meanwhile holds nothing newer than what
// was read.
func (l *Log) tailAside(es []Entry, name string, n int) ([]Entry, error) {
	f, err := os.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return es, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	return l.tailFile(es, f, fi.Size(), n)
}

// tailFile adds to es, newest first, the entries of f before size, from
// the end back, until es holds n.
func (l *Log) tailFile(es []Entry, f *os.File, size int64, n int) ([]Entry, error) {
	var rest []byte
	for pos := size; pos > 0 && len(es) < n; {
		k := min(int64(l.block), pos)
		pos -= k
		data := make([]byte, k, k+int64(len(rest)))
		if _, err := f.ReadAt(data, pos); err != nil {
			return nil, fmt.Errorf("read audit log: %w", err)
		}
		data = append(data, rest...)
		// The lines after data's first newline are whole; the bytes before
		// it are the end of a line that starts further back, unless data
		// starts at the beginning of the file.
		first := 0
		if pos > 0 {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				rest = data
				continue
			}
			first = i + 1
		}
		lines := data[first:]
		for len(lines) > 0 && len(es) < n {
			i := bytes.LastIndexByte(lines[:len(lines)-1], '\n') + 1
			if line := bytes.TrimSuffix(lines[i:], []byte("\n")); len(line) > 0 {
				var e Entry
				if json.Unmarshal(line, &e) == nil { // else a torn line, after a crash
					es = append(es, e)
				}
			}
			lines = lines[:i]
		}
		rest = data[:first]
	}
	return es, nil
}

// Close closes the file. An Append after it fails.
func (l *Log) Close() error {
	l.fileMu.Lock()
	defer l.fileMu.Unlock()
	return l.f.Close()
}

func clip(ss []string) []string {
	total := 0
	for i, s := range ss {
		total += len(s)
		if total > maxField || i >= 256 {
			return append(ss[:i:i], "…")
		}
	}
	return ss
}

func clipString(s string) string {
	if len(s) > maxField {
		return s[:maxField] + "…"
	}
	return s
}
