// Package store holds the manager's durable state: worker records, process
// records and process output. JetStream keeps them in an embedded NATS
// JetStream server; Memory keeps them in memory for fast tests of other
// packages. Both speak only domain types from package devops, never protobuf,
// and this package must not import the manager, the worker or the API.
//
// Output of a process is a sequence of chunks whose offsets count stdout and
// stderr bytes together. The stores keep them contiguous from offset 0, so a
// reader asking for everything past an offset gets every byte exactly once;
// the one exception is output a worker lost before it was sent, which
// SkipOutput records as a gap readers pass over.
package store

import (
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/devops-platform/devops"
)

// ErrOutputLimit is returned once by AppendOutput when a process's output
// reached its per-process limit; the bytes past the limit are not stored and
// the output is marked truncated (see OutputInfo).
var ErrOutputLimit = errors.New("process output limit reached")

// Defaults for the zero values in Config and Memory.
const (
	DefaultMaxOutputBytes        int64 = 8 << 30
	DefaultMaxProcessOutputBytes int64 = 1 << 30
)

// OutputInfo is what a store knows about the output of one process.
type OutputInfo struct {
	End       int64 // offset just past the last stored chunk
	Closed    bool  // CloseOutput (or DeleteOutput) was called
	Truncated bool  // chunks past the per-process limit were dropped
}

// Log attribute keys, in one place so that log queries stay stable.
const (
	logKeyProcessID = "process_id"
	logKeySubject   = "subject"
	logKeyError     = "error"
)

// key turns an id into a string that is a valid NATS subject token and KV
// key. Process ids (UUIDv7) and ordinary worker ids pass through unchanged so
// the stored data stays readable; anything else is base64url-encoded behind a
// "=" that plain ids never contain, so the two forms cannot collide.
func key(id string) (string, error) {
	if id == "" {
		return "", fmt.Errorf("%w: empty id", devops.ErrInvalid)
	}
	for _, r := range id {
		plain := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
		if !plain {
			return "=" + base64.RawURLEncoding.EncodeToString([]byte(id)), nil
		}
	}
	return id, nil
}

// trimChunk returns the part of c at or past from, and false when nothing of
// c reaches past from.
func trimChunk(c devops.Chunk, from int64) (devops.Chunk, bool) {
	if c.End() <= from {
		return c, false
	}
	if c.Offset < from {
		c.Data = c.Data[from-c.Offset:]
		c.Offset = from
	}
	return c, true
}

// checkChunk reports ErrInvalid for a chunk no store can keep.
func checkChunk(c devops.Chunk) error {
	if c.Stream != devops.Stdout && c.Stream != devops.Stderr {
		return fmt.Errorf("%w: unknown stream %d", devops.ErrInvalid, int(c.Stream))
	}
	if c.Offset < 0 {
		return fmt.Errorf("%w: negative offset %d", devops.ErrInvalid, c.Offset)
	}
	return nil
}

// fitChunk applies the rules both stores share to a chunk about to be
// appended to output that currently ends at end: bytes already stored are
// dropped (a worker resending after a reconnect), a gap is ErrOutOfRange,
// and bytes past limit are cut. It returns the part to store (possibly
// empty) and whether the limit cut something.
func fitChunk(c devops.Chunk, end, limit int64) (devops.Chunk, bool, error) {
	if c.Offset > end {
		return c, false, fmt.Errorf("%w: chunk at %d leaves a gap after %d", devops.ErrOutOfRange, c.Offset, end)
	}
	c, ok := trimChunk(c, end)
	if !ok {
		c.Offset, c.Data = end, nil
	}
	if c.End() > limit {
		c.Data = c.Data[:max(limit-c.Offset, 0)]
		return c, true, nil
	}
	return c, false, nil
}
