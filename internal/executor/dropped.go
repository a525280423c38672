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
