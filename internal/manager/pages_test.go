package manager

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/audit"
	"github.com/devops-platform/devops/internal/store"
	"github.com/devops-platform/devops/internal/wire"
)

// pageAll asks for a listing page by page, pageSize at a time, as a client
// does, and returns the keys of the pages it got.
func pageAll(t *testing.T, ask func(token string) (keys []string, next string)) [][]string {
	t.Helper()
	var pages [][]string
	token := ""
	for range 1000 {
		keys, next := ask(token)
		pages = append(pages, keys)
		if next == "" {
			return pages
		}
		if next != keys[len(keys)-1] {
			t.Fatalf("next page token %q, want the page's last, %q", next, keys[len(keys)-1])
		}
		token = next
	}
	t.Fatal("no last page after 1000")
	return nil
}

func TestListingsComePageByPage(t *testing.T) {
	mem := store.NewMemory()
	now := time.Now()
	process := func(i int) devops.Process {
		p := ended(devops.ProcessID(fmt.Sprintf("p%02d", i)), now)
		p.WorkerName = []string{"a", "b"}[i%2]
		return p
	}
	for i := 20; i >= 0; i-- {
		preload(t, mem, process(i))
	}
	m := startManager(t, Config{Store: mem})
	// Out of order into the table, as a restart may load them.
	for _, i := range []int{29, 21, 25, 22, 28, 23, 27, 24, 26} {
		m.procs.add(process(i))
	}
	m.fleet.mu.Lock()
	for i := 9; i >= 0; i-- {
		m.fleet.addLocked(devops.Run{ID: devops.RunID(fmt.Sprintf("run-%02d", i)), State: devops.RunSucceeded, EndedAt: now})
	}
	m.fleet.mu.Unlock()
	for i := range 12 {
		if _, err := m.registry.Register(devops.Worker{ID: devops.WorkerID(fmt.Sprintf("id-%02d", i)), Name: fmt.Sprintf("w%02d", i), Capacity: 1}); err != nil {
			t.Fatal(err)
		}
	}
	srv := &processServer{m: m}
	ctx := t.Context()
	processesIn := func(newestFirst bool, size int32, worker string) [][]string {
		return pageAll(t, func(token string) ([]string, string) {
			resp, err := srv.ListProcesses(ctx, &pb.ListProcessesRequest{Worker: worker, PageSize: size, PageToken: token, NewestFirst: newestFirst})
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, p := range resp.GetProcesses() {
				ids = append(ids, p.GetId())
			}
			return ids, resp.GetNextPageToken()
		})
	}
	processes := func(size int32, worker string) [][]string { return processesIn(false, size, worker) }
	newest := func(size int32, worker string) [][]string { return processesIn(true, size, worker) }
	keys := func(prefix string, from, to, step int) []string {
		var ks []string
		for i := from; i < to; i += step {
			ks = append(ks, fmt.Sprintf("%s%02d", prefix, i))
		}
		return ks
	}
	check := func(what string, got [][]string, want ...[]string) {
		t.Helper()
		if !slices.EqualFunc(got, want, slices.Equal) {
			t.Errorf("%s: pages %v, want %v", what, got, want)
		}
	}

	check("processes, 12 a page", processes(12, ""), keys("p", 0, 12, 1), keys("p", 12, 24, 1), keys("p", 24, 30, 1))
	check("processes, all at once (older clients)", processes(0, ""), keys("p", 0, 30, 1))
	check("processes on b, 10 a page", processes(10, "b"), keys("p", 1, 21, 2), keys("p", 21, 30, 2))
	check("processes, exactly a page: no empty one after it", processes(30, ""), keys("p", 0, 30, 1))
	backward := func(ks []string) []string { slices.Reverse(ks); return ks }
	check("processes newest first, 12 a page", newest(12, ""),
		backward(keys("p", 18, 30, 1)), backward(keys("p", 6, 18, 1)), backward(keys("p", 0, 6, 1)))
	check("processes on a newest first, 6 a page", newest(6, "a"), backward(keys("p", 18, 30, 2)), backward(keys("p", 6, 18, 2)),
		backward(keys("p", 0, 6, 2)))

	// Processes forgotten past --retention leave the listing.
	m.procs.remove([]devops.ProcessID{"p00", "p13", "p29"})
	if len(m.procs.order) != len(m.procs.byID) {
		t.Errorf("the table's order holds %d ids for %d processes", len(m.procs.order), len(m.procs.byID))
	}
	check("processes after some were forgotten", processes(14, ""),
		append(keys("p", 1, 13, 1), "p14", "p15"), keys("p", 16, 29, 1))

	workers := pageAll(t, func(token string) ([]string, string) {
		resp, err := srv.ListWorkers(ctx, &pb.ListWorkersRequest{PageSize: 5, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, w := range resp.GetWorkers() {
			names = append(names, w.GetName())
		}
		return names, resp.GetNextPageToken()
	})
	check("workers, 5 a page", workers, keys("w", 0, 5, 1), keys("w", 5, 10, 1), keys("w", 10, 12, 1))

	runsIn := func(newestFirst bool) [][]string {
		return pageAll(t, func(token string) ([]string, string) {
			resp, err := srv.ListRuns(ctx, &pb.ListRunsRequest{PageSize: 4, PageToken: token, NewestFirst: newestFirst})
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, r := range resp.GetRuns() {
				ids = append(ids, r.GetId())
			}
			return ids, resp.GetNextPageToken()
		})
	}
	check("runs, 4 a page", runsIn(false), keys("run-", 0, 4, 1), keys("run-", 4, 8, 1), keys("run-", 8, 10, 1))
	check("runs newest first, 4 a page", runsIn(true), backward(keys("run-", 6, 10, 1)), backward(keys("run-", 2, 6, 1)),
		backward(keys("run-", 0, 2, 1)))
}

// TestPagesStayUnderTheMessageLimit: a page is cut by its size in bytes
// too, but holds at least one item.
func TestPagesStayUnderTheMessageLimit(t *testing.T) {
	big := strings.Repeat("x", 700<<10)
	ps := make([]devops.Process, 10)
	for i := range ps {
		ps[i] = devops.Process{ID: devops.ProcessID(fmt.Sprint(i)), Spec: devops.Spec{Argv: []string{"echo", big}}}
	}
	page, more := fillPage(ps, pageLen(maxPageItems), wire.ProcessToPB)
	if len(page) != 2 || !more {
		t.Errorf("a page of 700 KiB processes holds %d (more: %v), want 2 under %d bytes, and more", len(page), more, pageBytes)
	}
	ps[0].Spec.Argv = []string{"echo", strings.Repeat("x", 3<<20)}
	if page, more := fillPage(ps, pageLen(10), wire.ProcessToPB); len(page) != 1 || !more {
		t.Errorf("a process over the page's bytes: a page of %d (more: %v), want it alone", len(page), more)
	}
	if page, more := fillPage(ps, pageLen(0), wire.ProcessToPB); len(page) != 10 || more {
		t.Errorf("all at once: a page of %d (more: %v), want all 10", len(page), more)
	}
}

// TestAuditAnswerStaysUnderTheMessageLimit: refused calls are audited, so
// anyone could fill the log with entries as large as an entry may be; the
// answer keeps the newest that fit and says how many it left out.
func TestAuditAnswerStaysUnderTheMessageLimit(t *testing.T) {
	m := startManager(t, Config{})
	big := strings.Repeat("x", 5000) // clipped to 4 KiB a field
	for i := range 1000 {
		if err := m.sec.audit.Append(audit.Entry{Principal: "anonymous", Action: "call", Target: big, Result: fmt.Sprint(i, big)}); err != nil {
			t.Fatal(err)
		}
	}
	srv := &securityServer{m: m}
	resp, err := srv.ListAudit(t.Context(), &pb.ListAuditRequest{Limit: 900})
	if err != nil {
		t.Fatal(err)
	}
	es := resp.GetEntries()
	if len(es) == 0 || resp.SizeVT() > pageBytes+16<<10 {
		t.Fatalf("%d entries in %d bytes, want some, in at most about %d", len(es), resp.SizeVT(), pageBytes)
	}
	if got := len(es) + int(resp.GetLeftOut()); got != 900 {
		t.Errorf("%d entries and %d left out, want 900 in all", len(es), resp.GetLeftOut())
	}
	if last := es[len(es)-1].GetResult(); !strings.HasPrefix(last, "999x") {
		t.Errorf("the last entry is %.10q…, want the newest, 999", last)
	}
	if first := es[0].GetResult(); !strings.HasPrefix(first, fmt.Sprint(1000-len(es), "x")) {
		t.Errorf("the first entry is %.10q…, want %d: the newest that fit, oldest first", first, 1000-len(es))
	}
}
