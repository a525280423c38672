//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/procfs"
)

func TestMountOf(t *testing.T) {
	// As procfs reads /proc/self/mountinfo: mount points still escaped.
	mount := func(dev, point, fstype string) *procfs.MountInfo {
		return &procfs.MountInfo{MajorMinorVer: dev, MountPoint: point, FSType: fstype}
	}
	mounts := []*procfs.MountInfo{
		mount("254:0", "/", "ext4"),
		mount("0:21", "/proc", "proc"),
		mount("7:0", "/mnt/j", "ext4"),
		mount("0:35", `/mnt/with\040space`, "tmpfs"),
		mount("0:36", "/mnt/j/inner", "tmpfs"),
	}
	tests := []struct {
		path      string
		wantPoint string
		wantType  string
		wantDev   string
	}{
		{"/tmp/devops-bench-1", "/", "ext4", "254:0"},
		{"/mnt/j", "/mnt/j", "ext4", "7:0"},
		{"/mnt/j/cl/m", "/mnt/j", "ext4", "7:0"},
		{"/mnt/jx", "/", "ext4", "254:0"}, // a sibling with the same prefix
		{"/mnt/j/inner/x", "/mnt/j/inner", "tmpfs", "0:36"},
		{"/mnt/with space/d", "/mnt/with space", "tmpfs", "0:35"},
	}
	for _, tt := range tests {
		m, ok := mountOf(mounts, tt.path)
		if !ok || unescapeMount(m.MountPoint) != tt.wantPoint || m.FSType != tt.wantType || m.MajorMinorVer != tt.wantDev {
			t.Errorf("mountOf(%q) = %+v, %v; want point %q, type %q, dev %q", tt.path, m, ok, tt.wantPoint, tt.wantType, tt.wantDev)
		}
	}
	if _, ok := mountOf(nil, "/x"); ok {
		t.Error("mountOf found a mount in no mountinfo")
	}
}

func TestHasJournal(t *testing.T) {
	dir := t.TempDir()
	sys := filepath.Join(dir, "sys")
	jbd2 := filepath.Join(dir, "jbd2")
	for _, d := range []string{sys, jbd2, filepath.Join(jbd2, "loop0-8")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for dev, name := range map[string]string{"254:0": "vda", "7:0": "loop0", "7:1": "loop1"} {
		if err := os.Symlink("../../devices/virtual/block/"+name, filepath.Join(sys, dev)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		dev                 string
		wantJournal, wantOK bool
	}{
		{"7:0", true, true},  // loop0-8 listed
		{"7:1", false, true}, // loop1 is not loop0
		{"254:0", false, true},
		{"9:9", false, false}, // no such device
	}
	for _, tt := range tests {
		j, ok := hasJournal(sys, jbd2, tt.dev)
		if j != tt.wantJournal || ok != tt.wantOK {
			t.Errorf("hasJournal(%s) = %v, %v; want %v, %v", tt.dev, j, ok, tt.wantJournal, tt.wantOK)
		}
	}
	// No jbd2 directory at all: no journal runs on this machine.
	if j, ok := hasJournal(sys, filepath.Join(dir, "none"), "7:0"); j || !ok {
		t.Errorf("without jbd2: %v, %v; want false, true", j, ok)
	}
}

func TestDescribeStorage(t *testing.T) {
	got := describeStorage(t.TempDir())
	if got == "unknown" || !strings.Contains(got, " on /") {
		t.Errorf("describeStorage = %q, want a file system and its mount point", got)
	}
}
