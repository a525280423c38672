package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/validate"
)

// maxExpanded bounds what one list expands to, as the manager bounds it: a
// typo such as w[1-1000000] must not make a million names.
const maxExpanded = validate.MaxWorkerNames

// expandWorkers expands pdsh-style ranges in worker names, as `pdsh -w`
// does: "web[1-3,7]" is web1, web2, web3 and web7; "db[08-10]" keeps the
// width (db08, db09, db10); "r[1-2]n[1-2]" is r1n1, r1n2, r2n1, r2n2.
// items come from a comma-separated flag, which also cut inside brackets:
// those pieces are joined again first. Hand-written: no kept Go library
// parses pdsh's host lists.
func expandWorkers(items []string) ([]string, error) {
	var out []string
	for i := 0; i < len(items); i++ {
		item := items[i]
		for strings.Count(item, "[") > strings.Count(item, "]") && i+1 < len(items) {
			i++
			item += "," + items[i]
		}
		names, err := expandOne(item)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %v", devops.ErrInvalid, item, err)
		}
		out = append(out, names...)
		if len(out) > maxExpanded {
			return nil, fmt.Errorf("%w: more than %d names", devops.ErrInvalid, maxExpanded)
		}
	}
	return out, nil
}

// expandOne expands the first bracket group of s, then the rest of each
// name it made.
func expandOne(s string) ([]string, error) {
	open := strings.IndexByte(s, '[')
	if open < 0 {
		if strings.ContainsRune(s, ']') {
			return nil, fmt.Errorf("a ] with no [")
		}
		return []string{s}, nil
	}
	end := strings.IndexByte(s[open:], ']')
	if end < 0 {
		return nil, fmt.Errorf("a [ with no ]")
	}
	prefix, group, rest := s[:open], s[open+1:open+end], s[open+end+1:]
	tails, err := expandOne(rest)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range strings.Split(group, ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		if !isRange {
			hi = lo
		}
		a, errA := strconv.Atoi(lo)
		b, errB := strconv.Atoi(hi)
		if lo == "" || errA != nil || errB != nil || a < 0 || b < a {
			return nil, fmt.Errorf("%q: want N or N-M with N <= M", r)
		}
		if (b-a+1)*len(tails) > maxExpanded {
			return nil, fmt.Errorf("more than %d names", maxExpanded)
		}
		width := 0
		if len(lo) > 1 && lo[0] == '0' {
			width = len(lo) // zero-padded, as the range's start is written
		}
		for n := a; n <= b; n++ {
			for _, t := range tails {
				out = append(out, fmt.Sprintf("%s%0*d%s", prefix, width, n, t))
			}
		}
	}
	return out, nil
}
