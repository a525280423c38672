package executor

// DroppedFile, beside OutputFile, says where the output file starts to hold
// frames again after the shim dropped the oldest ones to keep the spool
// under its bound (a Dropped, as JSON). It is written before the bytes are
// released, so a reader that finds what it read below Dropped.Pos must
// throw that away: it may be the zeros of a punched hole.
const DroppedFile = "dropped.json"

// Dropped is DroppedFile: the frame at file position Pos holds output from
// offset Offset; everything before it is gone.
type Dropped struct {
	Pos    int64 `json:"pos"`
	Offset int64 `json:"offset"`
}

// ReadFile, beside OutputFile, holds how far into OutputFile the worker has
// read and sent (8 bytes, big endian), rewritten in place as it reads. The
// shim drops only what the worker has read while the worker keeps reading,
// and holds the command back instead (like a full pipe); only once the
// worker has not moved for a while with output waiting (the manager is
// unreachable, or the worker is gone) does it drop unsent output.
const ReadFile = "read"
