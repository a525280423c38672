//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/procfs"
)

// mountOf returns the mount that holds path: the one with the longest
// mount point above it; the last such wins, as a later mount hides an
// earlier one. mounts are /proc/self/mountinfo's, as procfs reads them.
func mountOf(mounts []*procfs.MountInfo, path string) (*procfs.MountInfo, bool) {
	var best *procfs.MountInfo
	longest := -1
	for _, m := range mounts {
		if point := unescapeMount(m.MountPoint); under(path, point) && len(point) >= longest {
			best, longest = m, len(point)
		}
	}
	return best, best != nil
}

// under reports whether path is dir or below it.
func under(path, dir string) bool {
	return dir == "/" || path == dir || strings.HasPrefix(path, dir+"/")
}

// unescapeMount undoes the octal escapes the kernel writes in mountinfo for
// these four characters; procfs leaves them.
func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// describeStorage says what file system holds dir, where the manager and
// the workers keep their data in this run. It matters to the figures: on
// ext4 without a journal the kernel skips, for every new file, the inodes
// freed in the last minutes, which it finds one by one; with a command's
// files made and removed by the hundred a second, a create took 76-140 µs
// on this project's test VM against 3-4 µs on a journaled ext4 of the same
// disk (see bench/FINDINGS.md).
func describeStorage(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "unknown"
	}
	if p, err := filepath.EvalSymlinks(abs); err == nil {
		abs = p
	}
	mounts, err := procfs.GetMounts()
	if err != nil {
		return "unknown"
	}
	m, ok := mountOf(mounts, abs)
	if !ok {
		return "unknown"
	}
	s := fmt.Sprintf("%s (%s on %s)", m.FSType, m.Source, unescapeMount(m.MountPoint))
	if m.FSType == "ext4" {
		if j, known := hasJournal("/sys/dev/block", "/proc/fs/jbd2", m.MajorMinorVer); !known {
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
