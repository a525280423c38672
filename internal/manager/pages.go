package manager

import (
	"math"
	"slices"
	"strings"

	"github.com/devops-platform/devops"
)

// Listings (processes, workers, fleet runs) are answered a page at a time.
// A manager keeps every process for --retention, a week by default, and an
// answer holding them all passed gRPC's message size limit (MaxSendMsgSize,
// 8 MiB) at about 40,000 processes, or at eight whose arguments took 1 MiB
// each: `devops ps` then failed outright. A client asks for pages and
// follows next_page_token; one that asks for no page size (older clients)
// still gets everything at once.
const (
	// maxPageItems bounds a page's length whatever the client asks.
	maxPageItems = 5000
	// pageBytes bounds a page's encoded size, well under the message size
	// limit. A page holds at least one item, and one item stays under the
	// limit: its arguments and its environment take at most 1 MiB each
	// (internal/validate).
	pageBytes = 2 << 20
)

// pageLen is how many items an answer may hold when the client asked for
// asked: all of them when it asked for none.
func pageLen(asked int32) int {
	if asked <= 0 {
		return math.MaxInt
	}
	return min(int(asked), maxPageItems)
}

// lookahead is how many items to fetch for a page of n: one more, to know
// whether there are more.
func lookahead(n int) int {
	if n == math.MaxInt {
		return n
	}
	return n + 1
}

// fillPage converts items for an answer until it holds n of them or
// pageBytes when encoded (at least one, and no bound on bytes when n says
// all). more reports whether it stopped before the end of items.
func fillPage[T any, P interface{ SizeVT() int }](items []T, n int, toPB func(T) P) (page []P, more bool) {
	size := 0
	for _, it := range items {
		if len(page) == n {
			return page, true
		}
		p := toPB(it)
		if size += p.SizeVT(); len(page) > 0 && size > pageBytes && n != math.MaxInt {
			return page, true
		}
		page = append(page, p)
	}
	return page, false
}

// span returns the part of items, sorted by key, that the page after token
// is taken from: what comes after token, or, backward, what comes before it
// (for a page walked from its end); all of items when token is empty.
func span[T any](items []T, token string, key func(T) string, backward bool) []T {
	if token == "" {
		return items
	}
	i, found := slices.BinarySearchFunc(items, token, func(it T, token string) int { return strings.Compare(key(it), token) })
	if backward {
		return items[:i]
	}
	if found {
		i++
	}
	return items[i:]
}

// ProcessPage lists, oldest first, up to n processes that pass the filter
// and were created after the process afterID (from the first if empty);
// newestFirst, newest first, those created before it (from the last).
func (m *Manager) ProcessPage(f ProcessFilter, afterID devops.ProcessID, n int, newestFirst bool) []devops.Process {
	return m.procs.page(afterID, n, newestFirst, f.keep)
}

// FleetRunPage lists, oldest first, up to n fleet runs started after the
// run afterID (from the first if empty); newestFirst, newest first, those
// started before it (from the last).
func (m *Manager) FleetRunPage(afterID devops.RunID, n int, newestFirst bool) []devops.Run {
	type idEntry struct {
		id devops.RunID
		e  *runEntry
	}
	m.fleet.mu.Lock()
	es := make([]idEntry, 0, len(m.fleet.byID))
	for id, e := range m.fleet.byID {
		es = append(es, idEntry{id, e})
	}
	m.fleet.mu.Unlock()
	// Sorted by id before any run is copied: only the page's are.
	slices.SortFunc(es, func(a, b idEntry) int { return strings.Compare(string(a.id), string(b.id)) })
	es = span(es, string(afterID), func(e idEntry) string { return string(e.id) }, newestFirst)
	if newestFirst {
		slices.Reverse(es)
	}
	es = es[:min(n, len(es))]
	rs := make([]devops.Run, len(es))
	for i, e := range es {
		r, _ := m.fleet.snapshot(e.e)
		rs[i] = m.fillRun(r)
	}
	return rs
}
