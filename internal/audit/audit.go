// Package audit is the manager's durable audit log: one JSON line per
// action (who, what, where, when, with which result) appended to a file in
// the manager's data dir and synced before the call returns. It imports only
// the standard library.
package audit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sync"
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
}

// Log appends entries to one file (mode 0600).
type Log struct {
	mu sync.Mutex // serializes appends and reads of f
	f  *os.File
}

// maxField bounds what one entry holds of any request field, so that a
// hostile request cannot grow the log by megabytes per call.
const maxField = 4096

// Open opens (or creates) the log at path.
func Open(path string) (*Log, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	return &Log{f: f}, nil
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
	if _, err := l.f.Write(data); err != nil {
		return fmt.Errorf("append audit entry: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("sync audit log: %w", err)
	}
	return nil
}

// Tail returns the last n entries, oldest first.
func (l *Log) Tail(n int) ([]Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.f.Seek(0, 0); err != nil {
		return nil, err
	}
	var ring []Entry
	sc := bufio.NewScanner(l.f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e Entry
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue // a torn last line after a crash
		}
		ring = append(ring, e)
		if len(ring) > 2*n {
			ring = append(ring[:0], ring[len(ring)-n:]...)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	if len(ring) > n {
		ring = ring[len(ring)-n:]
	}
	return ring, nil
}

// Close closes the file.
func (l *Log) Close() error { return l.f.Close() }

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
