package manager

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/devops-platform/devops"
)

// inputs keeps the standard input of the commands that have one (run
// --stdin), a file each in <data-dir>/input named by the process id, from
// their submission until retention forgets them: the worker is sent it
// with the command, which may be long after the submission (a queue, a
// manager restart, a fleet run's retry). Records only say how long it is,
// as a week of records is held in memory. A fleet run's input is a file
// named by the run id, which each child's is a link to.
//
// A standard input over devops.MaxStdin is uploaded ahead of its request
// (UploadStdin): a file in <data-dir>/upload named by its SHA-256, which
// the request names and the submission links in as above. An upload is
// kept uploadTTL, so that a request retried after a manager restart still
// finds it; the inputs of processes that ended go at once (release).
type inputs struct {
	dir     string
	uploads string
	// maxUpload bounds one upload.
	maxUpload int64
}

// uploadTTL is how long an upload is kept after it was last sent.
const uploadTTL = time.Hour

// writebackStep is how much of an upload is received before the kernel is
// asked to start writing it to disk (startWriteback).
const writebackStep = 8 << 20

// errNoInput: a process's input is not there any more, or not whole; it
// cannot start.
var errNoInput = errors.New("its standard input is gone")

func (in inputs) path(id string) string { return filepath.Join(in.dir, id) }

// put writes data as id's input, synced: the record that names it is
// stored after it.
func (in inputs) put(id string, data []byte) error {
	if err := os.MkdirAll(in.dir, 0o700); err != nil {
		return fmt.Errorf("create input directory: %w", err)
	}
	f, err := os.OpenFile(in.path(id), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create input of %s: %w", id, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(in.path(id))
		return fmt.Errorf("write input of %s: %w", id, err)
	}
	return nil
}

// link makes from's input to's too, without a copy.
func (in inputs) link(from, to string) error {
	if err := os.Link(in.path(from), in.path(to)); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("link input of %s to %s: %w", from, to, err)
	}
	return nil
}

// read returns id's input, which must be n bytes long: a shorter file is
// one a crash of the machine cut.
func (in inputs) read(id string, n int64) ([]byte, error) {
	data, err := os.ReadFile(in.path(id))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errNoInput, err)
	}
	if int64(len(data)) != n {
		return nil, fmt.Errorf("%w: %d bytes of %d are left", errNoInput, len(data), n)
	}
	return data, nil
}

// drop removes the inputs of ids, of a submission that did not go ahead.
func (in inputs) drop(ids ...string) {
	for _, id := range ids {
		os.Remove(in.path(id))
	}
}

// prune removes the inputs whose ids keep says no to. It looks at the
// directory, not at every id: few commands have an input.
func (in inputs) prune(keep func(id string) bool) error {
	ents, err := os.ReadDir(in.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read input directory: %w", err)
	}
	for _, e := range ents {
		if !keep(e.Name()) {
			if err := os.Remove(in.path(e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove input: %w", err)
			}
		}
	}
	return nil
}

// receive writes the chunks next returns, to io.EOF, as an upload, synced:
// the request that names it is stored after it. It returns the upload's id
// and size. The same bytes make the same id, and one file.
func (in inputs) receive(next func() ([]byte, error)) (string, int64, error) {
	if err := os.MkdirAll(in.uploads, 0o700); err != nil {
		return "", 0, fmt.Errorf("create upload directory: %w", err)
	}
	// Uploads no request named go when the next one comes, and at start:
	// no timer for what is rare.
	if err := in.pruneUploads(time.Now().Add(-uploadTTL)); err != nil {
		return "", 0, err
	}
	// Named with a dot, unlike any id: a part a stop cut short is
	// removed at the next start (removeParts).
	f, err := os.CreateTemp(in.uploads, ".part-")
	if err != nil {
		return "", 0, fmt.Errorf("create upload: %w", err)
	}
	part := f.Name()
	id, n, err := in.write(f, next)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(part, in.uploadPath(id))
	}
	if err != nil {
		os.Remove(part)
		return "", 0, err
	}
	return id, n, nil
}

func (in inputs) write(f *os.File, next func() ([]byte, error)) (string, int64, error) {
	h := sha256.New()
	var n, written int64
	for {
		data, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", n, err
		}
		n += int64(len(data))
		if in.maxUpload > 0 && n > in.maxUpload {
			return "", n, fmt.Errorf("%w: standard input is over the manager's bound of %s (devops manager --max-stdin)", devops.ErrInvalid, sizeString(in.maxUpload))
		}
		h.Write(data)
		if _, err := f.Write(data); err != nil {
			return "", n, fmt.Errorf("write upload: %w", err)
		}
		if n-written >= writebackStep {
			startWriteback(f, written, n-written)
			written = n
		}
	}
	if err := f.Sync(); err != nil {
		return "", n, fmt.Errorf("write upload: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

func (in inputs) uploadPath(id string) string { return filepath.Join(in.uploads, id) }

// uploaded returns the size of upload id: devops.ErrInvalid when there is
// no such upload, or no longer. Its clock starts again: a request names it.
func (in inputs) uploaded(id string) (int64, error) {
	if len(id) != sha256.Size*2 || strings.Trim(id, "0123456789abcdef") != "" {
		return 0, fmt.Errorf("%w: %q is not an upload id", devops.ErrInvalid, id)
	}
	st, err := os.Stat(in.uploadPath(id))
	if err != nil {
		return 0, fmt.Errorf("%w: standard input upload %s is not on the manager (uploads are kept %v): send it again", devops.ErrInvalid, id, uploadTTL)
	}
	now := time.Now()
	os.Chtimes(in.uploadPath(id), now, now)
	return st.Size(), nil
}

// linkUpload makes upload id the input of to, without a copy.
func (in inputs) linkUpload(id, to string) error {
	if err := os.MkdirAll(in.dir, 0o700); err != nil {
		return fmt.Errorf("create input directory: %w", err)
	}
	if err := os.Link(in.uploadPath(id), in.path(to)); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("link upload %s to %s: %w", id, to, err)
	}
	return nil
}

// pruneUploads removes the uploads (and parts of uploads) last sent,
// named or released before cutoff, unless a process or run still reads
// it: run --retries names it again when its command ended, hours later.
func (in inputs) pruneUploads(cutoff time.Time) error {
	ents, err := os.ReadDir(in.uploads)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read upload directory: %w", err)
	}
	var held []fs.FileInfo // the inputs, read once, when an upload is old
	for _, e := range ents {
		info, err := e.Info()
		if err != nil || !info.ModTime().Before(cutoff) {
			continue
		}
		if held == nil {
			held = in.infos()
		}
		if slices.ContainsFunc(held, func(i fs.FileInfo) bool { return os.SameFile(i, info) }) {
			continue
		}
		if err := os.Remove(in.uploadPath(e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove upload: %w", err)
		}
	}
	return nil
}

// removeParts removes the parts of uploads that a stop of the manager cut
// short: at start, when nothing is being received.
func (in inputs) removeParts() {
	parts, _ := filepath.Glob(filepath.Join(in.uploads, ".part-*"))
	for _, p := range parts {
		os.Remove(p)
	}
}

// infos describes every input (few commands have one); not nil.
func (in inputs) infos() []fs.FileInfo {
	infos := []fs.FileInfo{}
	ents, _ := os.ReadDir(in.dir)
	for _, e := range ents {
		if info, err := e.Info(); err == nil {
			infos = append(infos, info)
		}
	}
	return infos
}

// release removes id's input, which nothing reads any more. An upload it
// is a link to is kept uploadTTL from now: its time is the file's, and
// run --retries names it again once the command ended.
func (in inputs) release(id string) {
	now := time.Now()
	os.Chtimes(in.path(id), now, now)
	os.Remove(in.path(id))
}

// open opens id's input, which must be n bytes long (see read).
func (in inputs) open(id string, n int64) (*os.File, error) {
	f, err := os.Open(in.path(id))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errNoInput, err)
	}
	if st, err := f.Stat(); err != nil || st.Size() != n {
		f.Close()
		return nil, fmt.Errorf("%w: not %d bytes", errNoInput, n)
	}
	return f, nil
}

// sizeString says n in the unit that flags were given it in.
func sizeString(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
