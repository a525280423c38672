//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// mount is one line of /proc/self/mountinfo, the parts the bench reads.
type mount struct {
	dev    string // major:minor
	point  string // where it is mounted
	fstype string
	source string
}

// mountOf returns the mount in mountinfo (the text of /proc/self/mountinfo)
// that holds path: the one with the longest mount point above it; the last
// such line wins, as a later mount hides an earlier one.
func mountOf(mountinfo, path string) (mount, bool) {
	var best mount
	found := false
	for line := range strings.SplitSeq(mountinfo, "\n") {
		f := strings.Fields(line)
		sep := -1
		for i, v := range f {
			if v == "-" {
				sep = i
				break
			}
		}
		if len(f) < 5 || sep < 0 || len(f) < sep+3 {
			continue
		}
		m := mount{dev: f[2], point: unescapeMount(f[4]), fstype: f[sep+1], source: unescapeMount(f[sep+2])}
		if !under(path, m.point) || (found && len(m.point) < len(best.point)) {
			continue
		}
		best, found = m, true
	}
	return best, found
}

// under reports whether path is dir or below it.
func under(path, dir string) bool {
	return dir == "/" || path == dir || strings.HasPrefix(path, dir+"/")
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// describeStorage says what file system holds dir, where the manager and
// the workers keep their data in this run. It matters to the figures: on
// ext4 without a journal the kernel skips, for every new file, the inodes
// freed in the last minutes, which it finds one by one; with a command's
// files made and removed by the hundred a second, a create took 76-140 µs
// on this project's test VM against 3-4 µs on a journaled ext4 of the same
// disk (see the README's Performance section).
func describeStorage(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "unknown"
	}
	if p, err := filepath.EvalSymlinks(abs); err == nil {
		abs = p
	}
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "unknown"
	}
	m, ok := mountOf(string(info), abs)
	if !ok {
		return "unknown"
	}
	s := fmt.Sprintf("%s (%s on %s)", m.fstype, m.source, m.point)
	if m.fstype == "ext4" {
		if j, known := hasJournal("/sys/dev/block", "/proc/fs/jbd2", m.dev); !known {
			s += ", journal unknown"
		} else if j {
			s += ", with a journal"
		} else {
			s += ", without a journal"
		}
	}
	return s
}

// hasJournal reports whether the ext4 file system on block device dev
// (major:minor) has a journal: the kernel lists each journal it runs under
// jbd2 as <device name>-<journal inode>. known is false when the device's
// name cannot be found.
func hasJournal(sysBlock, jbd2, dev string) (journal, known bool) {
	target, err := os.Readlink(filepath.Join(sysBlock, dev))
	if err != nil {
		return false, false
	}
	name := filepath.Base(target)
	entries, err := os.ReadDir(jbd2)
	if err != nil && !os.IsNotExist(err) {
		return false, false
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), name+"-") {
			return true, true
		}
	}
	return false, true
}
