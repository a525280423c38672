package manager

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// inputs keeps the standard input of the commands that have one (run
// --stdin), a file each in <data-dir>/input named by the process id, from
// their submission until retention forgets them: the worker is sent it
// with the command, which may be long after the submission (a queue, a
// manager restart, a fleet run's retry). Records only say how long it is,
// as a week of records is held in memory. A fleet run's input is a file
// named by the run id, which each child's is a link to.
type inputs struct{ dir string }

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
