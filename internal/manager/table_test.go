package manager

import (
	"fmt"
	"maps"
	"testing"

	"github.com/devops-platform/devops"
)

// TestStateCountsFollowTheTable: the counts /metrics reports, kept as the
// table changes, match a count over the whole table after adds (again, as
// a restart may), state changes, refused changes and removals.
func TestStateCountsFollowTheTable(t *testing.T) {
	tb := newTable()
	var es []*entry
	for i := range 10 {
		es = append(es, tb.add(devops.Process{ID: devops.ProcessID(fmt.Sprint("p", i)), State: devops.StatePending}))
	}
	tb.add(devops.Process{ID: "p0", State: devops.StateRunning}) // p0 again
	for _, e := range es[1:5] {
		tb.update(e, func(p *devops.Process) { p.State = devops.StateRunning })
	}
	for _, e := range es[3:5] {
		tb.update(e, func(p *devops.Process) { p.State = devops.StateSucceeded })
	}
	tb.update(es[3], func(p *devops.Process) { p.State = devops.StateFailed }) // refused: it ended
	tb.update(es[5], func(p *devops.Process) { p.Reason = "waits" })           // no state change
	tb.remove([]devops.ProcessID{"p4", "p9", "nope"})

	want := map[devops.State]int{}
	for _, e := range tb.byID {
		want[e.p.State]++
	}
	got := tb.countByState()
	maps.DeleteFunc(got, func(_ devops.State, n int) bool { return n == 0 })
	if !maps.Equal(got, want) {
		t.Errorf("counts %v, want %v", got, want)
	}
	if want[devops.StateRunning] != 3 || want[devops.StateSucceeded] != 1 || want[devops.StatePending] != 4 {
		t.Errorf("the table holds %v, want 3 running, 1 succeeded, 4 pending", want)
	}
}
