// Package spare keeps a few empty files or directories made ahead of need,
// beside where they will go, so that creating one on the path of a
// command's start becomes a rename.
//
// Why: on file systems that are slow to hand out an inode a create costs
// far more than a rename. On this project's test VM (ext4 without a
// journal, where each new inode first passes over those freed in the last
// minutes) a mkdir took up to 1 ms after many deletions, a create 0.6 ms
// and a rename 14-35 µs, and a command's start made five of them before
// its first byte. Where creating is fast (tmpfs, ext4 with a journal) the
// spares change little either way. It imports only the standard library
// and x/sys.
package spare

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Pool keeps up to n spares in one directory, each made by mk and named
// prefix followed by a number. A goroutine makes new ones as they are
// taken: at once, or a few milliseconds later after a quiet moment (see
// refillDelay). No other pool of the same directory may have a prefix that
// starts with this one's: New removes what matches it.
type Pool struct {
	dir, prefix string
	nests       []string // where spares are made, in turn; dir when empty
	n           int
	mk          func(path string) error
	log         *slog.Logger

	mu    sync.Mutex // protects ready, seq, off, lastTake and quiet
	ready []string   // spares made, in the order they were
	seq   int        // the number in the next spare's name
	off   bool       // this file system cannot rename without replacing
	// lastTake is when a spare was last taken; quiet says whether that
	// take came quietGap or more after the one before (see pause).
	lastTake time.Time
	quiet    bool

	wake      chan struct{} // a take wants another spare made (capacity 1)
	quit      chan struct{} // closed by Close
	done      chan struct{} // closed when the filler returns
	closeOnce sync.Once
}

// New removes what a pool of dir and prefix left there before (a crash),
// then keeps n spares made by mk in dir; mk gets the path of a spare
// to create (a file or a directory) and must leave nothing there when it
// fails. log gets the failures to make one; nil discards. With n < 1 the
// pool holds none and Take always reports false.
func New(dir, prefix string, n int, mk func(path string) error, log *slog.Logger) *Pool {
	return newPool(dir, prefix, 0, n, mk, log)
}

// NewNested is New for spares that are files, made in turn in nests
// directories of their own in dir (named prefix, "nest-" and a number),
// which the file system is asked to place apart (Spread on dir), and
// renamed from there into dir when taken.
//
// Why: a file's inode stays where it was made. Made in dir, all of a
// pool's files are made, and later freed, in dir's block group, where on
// ext4 without a journal each new inode first passes over those freed in
// the last minutes (see Spread): 12% of a busy manager's CPU went to
// making its output files ahead. Made in nests apart, each group sees a
// fraction of them. A nest that cannot be made leaves the pool making its
// spares in dir.
func NewNested(dir, prefix string, nests, n int, mk func(path string) error, log *slog.Logger) *Pool {
	return newPool(dir, prefix, nests, n, mk, log)
}

func newPool(dir, prefix string, nests, n int, mk func(path string) error, log *slog.Logger) *Pool {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Pool{dir: dir, prefix: prefix, n: n, mk: mk, log: log,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	// The nests too, with what they held: they are made again below.
	if old, err := filepath.Glob(filepath.Join(dir, globEscape(prefix)+"*")); err == nil {
		for _, path := range old {
			os.RemoveAll(path)
		}
	}
	if n < 1 {
		close(p.done)
		return p
	}
	if nests > 0 {
		if err := Spread(dir); err != nil {
			log.Debug("spare nests made in one place", "dir", dir, "err", err)
		}
		for i := range nests {
			nest := filepath.Join(dir, fmt.Sprintf("%snest-%d", prefix, i))
			if err := os.Mkdir(nest, 0o700); err != nil {
				log.Warn("make a nest for spares; making them beside their place", "err", err)
				for _, made := range p.nests {
					os.Remove(made)
				}
				p.nests = nil
				break
			}
			p.nests = append(p.nests, nest)
		}
	}
	go p.fill()
	return p
}

// where is the directory in which spare number seq is made.
func (p *Pool) where(seq int) string {
	if len(p.nests) == 0 {
		return p.dir
	}
	return p.nests[seq%len(p.nests)]
}

// globEscape quotes the characters filepath.Match treats specially.
func globEscape(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', '\\':
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return string(b)
}

// fill makes spares until there are n, then waits for a take.
func (p *Pool) fill() {
	defer close(p.done)
	for {
		for p.short() {
			p.mu.Lock()
			path := filepath.Join(p.where(p.seq), fmt.Sprintf("%s%d", p.prefix, p.seq))
			p.seq++
			p.mu.Unlock()
			if err := p.mk(path); err != nil {
				// Tried again at the next take: no loop on a directory
				// that went away.
				p.log.Warn("make a spare", "path", path, "err", err)
				break
			}
			p.mu.Lock()
			p.ready = append(p.ready, path)
			p.mu.Unlock()
			select {
			case <-p.quit:
				return
			default:
			}
		}
		select {
		case <-p.wake:
		case <-p.quit:
			return
		}
		if !p.pause() {
			return
		}
	}
}

// After a take that came after a quiet moment (quietGap without one), the
// pool waits refillDelay before it makes more: such a take is the start of
// a command on an idle machine, and what follows it to the command's first
// byte (a few milliseconds) runs on the same few cores, where a slow
// create took time from it. Takes that come often (commands back to back,
// many at once) refill at once, as the time between two starts is where a
// create costs least; delaying those cut throughput by a fifth or more.
// `echo hi` one at a time on 2 cores, ext4 after many deletions (make
// bench, scenario 1): first byte p50 0.5-1.8 ms lower in five interleaved
// pairs of six, the sixth even.
const (
	quietGap    = 20 * time.Millisecond
	refillDelay = 4 * time.Millisecond
)

// pause waits before a refill as said above, and no longer once no spare
// is left (a take would then make its own on the path). false: Close.
func (p *Pool) pause() bool {
	p.mu.Lock()
	quiet := p.quiet
	p.mu.Unlock()
	if !quiet {
		return true
	}
	t := time.NewTimer(refillDelay)
	defer t.Stop()
	for !p.empty() {
		select {
		case <-t.C:
			return true
		case <-p.wake: // another take: the refill after the pause makes up for it
		case <-p.quit:
			return false
		}
	}
	return true
}

func (p *Pool) empty() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready) == 0
}

func (p *Pool) short() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.off && len(p.ready) < p.n
}

// Take moves a spare to dst and reports whether it did. It does not when
// none is ready, when dst exists (renames here never replace), or when
// the file system cannot rename so: the caller then creates dst as it
// would without a pool, and meets whatever error that brings. A nil Pool
// holds none.
func (p *Pool) Take(dst string) bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	if len(p.ready) == 0 {
		p.mu.Unlock()
		p.poke() // after a failed make, or faster than the filler
		return false
	}
	src := p.ready[0]
	p.ready = p.ready[1:]
	now := time.Now()
	p.quiet = now.Sub(p.lastTake) >= quietGap
	p.lastTake = now
	p.mu.Unlock()
	err := renameNoReplace(src, dst)
	if err == nil {
		p.poke()
		return true
	}
	if os.IsExist(err) {
		p.mu.Lock()
		p.ready = append(p.ready, src) // still a spare
		p.mu.Unlock()
		return false
	}
	if isUnsupported(err) {
		p.mu.Lock()
		p.off = true
		p.mu.Unlock()
	}
	os.RemoveAll(src)
	p.poke()
	return false
}

// EmptyFile makes an empty file at path with mode 0600, as a pool's make
// (or part of one): it fails when path exists, and leaves nothing when it
// fails.
func EmptyFile(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// RemoveAll removes the directory path and what it holds, as os.RemoveAll
// does, but has the kernel free the directory itself only once path's
// parent is unlocked again.
//
// Why: the rmdir that drops a directory's last reference frees its blocks
// while it still holds the parent's lock, and where freeing waits for the
// disk (ext4 without a journal, mounted with discard, as on this project's
// test VMs: 1-26 ms) a Take renaming the next spare into that parent
// waited as long, on the path of a command's start. Held open, the
// directory is freed when it is closed, after the rmdir.
func RemoveAll(path string) error {
	if f, err := os.Open(path); err == nil {
		defer f.Close()
	}
	return os.RemoveAll(path)
}

func (p *Pool) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Close stops making spares and removes those not taken. Take reports
// false after it. A nil Pool has nothing to close.
func (p *Pool) Close() {
	if p == nil {
		return
	}
	p.closeOnce.Do(func() {
		close(p.quit)
		<-p.done
		p.mu.Lock()
		left := p.ready
		p.ready, p.off = nil, true
		p.mu.Unlock()
		for _, path := range left {
			os.RemoveAll(path)
		}
		for _, nest := range p.nests {
			os.Remove(nest) // empty now, unless a spare's removal failed
		}
	})
}
