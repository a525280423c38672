package registry

import (
	"math"
	"time"

	"github.com/devops-platform/devops"
)

// HistoryLen is how many metrics samples the registry keeps per worker: five
// minutes at the default interval of 5 s.
const HistoryLen = 60

// history is a worker's latest metrics samples, kept small: at 10,000
// workers a full history of devops.Metrics (128 bytes, a Version string
// each) would be ~8 KiB a worker, as much as a seventh of all an idle
// worker costs the manager; HistoryLen samples are 2,880 bytes (3 KiB
// with the allocator's rounding).
type history struct {
	// samples holds at most HistoryLen samples. Until it is full they are
	// oldest first; after, it is a ring whose oldest sample is at next.
	samples []sample
	next    int
}

// sample is one devops.Metrics as the history keeps it: 48 bytes. What it
// gives back differs from what it was given only in ways a chart of the
// last five minutes cannot show:
//   - the time is kept to the nanosecond, and comes back in UTC (samples
//     come off the wire in UTC);
//   - the percentage, the load averages and the byte counts are float32:
//     within 1 in 16 million of the sample (a byte count over 16 MiB is off
//     by at most 1 in 16 million of it, at most 4 KiB in 64 GiB);
//   - the uptime is in whole seconds;
//   - Running and FreeSlots stop at 65,535, negative ones at 0;
//   - no Version of its own: every sample says the worker's latest.
type sample struct {
	time                                  int64 // Unix nanoseconds; 0 for the zero time
	cpu, load1, load5, load15             float32
	memUsed, memTotal, diskUsed, diskFree float32 // bytes
	uptime                                uint32  // seconds
	running, freeSlots                    uint16
}

func compact(m devops.Metrics) sample {
	var t int64
	if !m.Time.IsZero() {
		t = m.Time.UnixNano()
	}
	return sample{
		time: t,
		cpu:  float32(m.CPUPercent), load1: float32(m.Load1), load5: float32(m.Load5), load15: float32(m.Load15),
		memUsed: float32(m.MemoryUsedBytes), memTotal: float32(m.MemoryTotalBytes),
		diskUsed: float32(m.DiskUsedBytes), diskFree: float32(m.DiskFreeBytes),
		uptime:  uint32(clamp(int64(m.Uptime/time.Second), math.MaxUint32)),
		running: uint16(clamp(int64(m.Running), math.MaxUint16)), freeSlots: uint16(clamp(int64(m.FreeSlots), math.MaxUint16)),
	}
}

// clamp is n within [0, hi].
func clamp(n, hi int64) int64 { return min(max(n, 0), hi) }

// metrics is the sample as devops.Metrics, with the worker's version.
func (s sample) metrics(version string) devops.Metrics {
	m := devops.Metrics{
		CPUPercent: float64(s.cpu), Load1: float64(s.load1), Load5: float64(s.load5), Load15: float64(s.load15),
		MemoryUsedBytes: uint64(s.memUsed), MemoryTotalBytes: uint64(s.memTotal),
		DiskUsedBytes: uint64(s.diskUsed), DiskFreeBytes: uint64(s.diskFree),
		Running: int(s.running), FreeSlots: int(s.freeSlots),
		Uptime:  time.Duration(s.uptime) * time.Second,
		Version: version,
	}
	if s.time != 0 {
		m.Time = time.Unix(0, s.time).UTC()
	}
	return m
}

// add keeps m, dropping the oldest sample beyond HistoryLen.
func (h *history) add(m devops.Metrics) {
	s := compact(m)
	if len(h.samples) < HistoryLen {
		// Grown as it fills (a worker that sends a sample a minute takes
		// an hour to fill it): 64 samples' room at most, 3 KiB.
		h.samples = append(h.samples, s)
		return
	}
	h.samples[h.next] = s
	h.next = (h.next + 1) % HistoryLen
}

// list returns the samples oldest first, each with the given version.
func (h *history) list(version string) []devops.Metrics {
	if len(h.samples) == 0 {
		return nil
	}
	out := make([]devops.Metrics, 0, len(h.samples))
	for _, part := range [][]sample{h.samples[h.next:], h.samples[:h.next]} {
		for _, s := range part {
			out = append(out, s.metrics(version))
		}
	}
	return out
}

// History returns the worker's latest metrics samples, oldest first, at
// most HistoryLen, kept as sample says; an error wrapping
// devops.ErrNotFound when the worker is unknown (by id or name).
func (r *Registry) History(idOrName string) ([]devops.Metrics, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, err := r.findLocked(idOrName)
	if err != nil {
		return nil, err
	}
	return e.history.list(e.w.Metrics.Version), nil
}
