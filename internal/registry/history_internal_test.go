package registry

import (
	"testing"
	"unsafe"

	"github.com/devops-platform/devops"
)

// TestHistorySize pins what a worker's full history costs: HistoryLen
// samples of 48 bytes in room for at most 64 (3 KiB), against ~8 KiB of
// devops.Metrics, and no allocation once it is full.
func TestHistorySize(t *testing.T) {
	if got := unsafe.Sizeof(sample{}); got != 48 {
		t.Errorf("a sample is %d bytes, want 48", got)
	}
	var h history
	for range HistoryLen {
		h.add(devops.Metrics{Load1: 1})
	}
	if room := cap(h.samples) * int(unsafe.Sizeof(sample{})); room > 3<<10 {
		t.Errorf("a full history has room for %d samples, %d bytes; want at most 3 KiB", cap(h.samples), room)
	}
	if allocs := testing.AllocsPerRun(100, func() { h.add(devops.Metrics{Load1: 2}) }); allocs != 0 {
		t.Errorf("a sample into a full history allocates %v times, want 0", allocs)
	}
}
