package cli

import (
	"cmp"
	"fmt"
	"slices"
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

// compressWorkers is expandWorkers' inverse, for people to read: names
// that differ only in a number at their end, written with as many digits,
// share one bracket (web01, web02, web03 and web07 are web[01-03,07]).
// Other names stay as they are. The result is sorted.
func compressWorkers(names []string) string {
	type numbered struct {
		prefix string
		width  int
		n      int
	}
	var plain []string
	var nums []numbered
	for _, name := range names {
		i := len(name)
		for i > 0 && name[i-1] >= '0' && name[i-1] <= '9' {
			i--
		}
		n, err := strconv.Atoi(name[i:])
		if i == len(name) || err != nil {
			plain = append(plain, name)
			continue
		}
		nums = append(nums, numbered{name[:i], len(name) - i, n})
	}
	slices.SortFunc(nums, func(a, b numbered) int {
		return cmp.Or(strings.Compare(a.prefix, b.prefix), a.width-b.width, a.n-b.n)
	})
	nums = slices.Compact(nums)
	out := slices.Clone(plain)
	for len(nums) > 0 {
		j := 1
		for j < len(nums) && nums[j].prefix == nums[0].prefix && nums[j].width == nums[0].width {
			j++
		}
		group := nums[:j]
		nums = nums[j:]
		if len(group) == 1 {
			out = append(out, fmt.Sprintf("%s%0*d", group[0].prefix, group[0].width, group[0].n))
			continue
		}
		var ranges []string
		for k := 0; k < len(group); {
			l := k
			for l+1 < len(group) && group[l+1].n <= group[l].n+1 {
				l++
			}
			r := fmt.Sprintf("%0*d", group[k].width, group[k].n)
			if group[l].n != group[k].n {
				r += fmt.Sprintf("-%0*d", group[l].width, group[l].n)
			}
			ranges = append(ranges, r)
			k = l + 1
		}
		out = append(out, group[0].prefix+"["+strings.Join(ranges, ",")+"]")
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}
