package worker

import (
	"sync"

	"github.com/prometheus/procfs"
)

// cpuMeter is the host's CPU use between two reads of /proc/stat, read
// with procfs, which the Prometheus client links anyway. gopsutil's cpu
// package did this before, but its package initialiser reads /proc/stat
// twice at every start of the binary: each CLI call and each shim and init
// paid for what only a worker's metrics use.
type cpuMeter struct {
	fs procfs.FS
	ok bool // fs could be opened

	mu   sync.Mutex // protects last
	last procfs.CPUStat
}

// newCPUMeter starts measuring from now: the first percent covers the
// time since. It measures nothing where /proc cannot be read.
func newCPUMeter() *cpuMeter {
	c := &cpuMeter{}
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return c
	}
	c.fs, c.ok = fs, true
	if st, err := fs.Stat(); err == nil {
		c.last = st.CPUTotal
	}
	return c
}

// percent returns the share of the CPUs' time spent busy since the last
// call, 0-100; false when it cannot tell.
func (c *cpuMeter) percent() (float64, bool) {
	if !c.ok {
		return 0, false
	}
	st, err := c.fs.Stat()
	if err != nil {
		return 0, false
	}
	c.mu.Lock()
	prev := c.last
	c.last = st.CPUTotal
	c.mu.Unlock()
	return busyPercent(prev, st.CPUTotal)
}

// busyPercent is the share of the time between a and b that was not idle.
// Guest time is part of user time in /proc/stat, so it is not added.
func busyPercent(a, b procfs.CPUStat) (float64, bool) {
	total := func(s procfs.CPUStat) float64 {
		return s.User + s.Nice + s.System + s.Idle + s.Iowait + s.IRQ + s.SoftIRQ + s.Steal
	}
	idle := (b.Idle + b.Iowait) - (a.Idle + a.Iowait)
	all := total(b) - total(a)
	if all <= 0 {
		return 0, false
	}
	return min(max(100*(all-idle)/all, 0), 100), true
}
