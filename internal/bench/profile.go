//go:build linux

package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
)

// profileStart starts a CPU profile of the main cluster's manager, when
// the bench runs with -pprof; profileStop ends it. Profiles land in
// <out>/profiles/<name>.pprof.
func (b *bench) profileStart(name string) { b.profileStartOn(b.c, name) }
func (b *bench) profileStop(name string)  { b.profileStopOn(b.c, name) }

func (b *bench) profileStartOn(c *cluster, name string) {
	if c == nil || c.pprof == "" {
		return
	}
	dir := filepath.Join(b.out, "profiles")
	os.MkdirAll(dir, 0o755)
	path, _ := filepath.Abs(filepath.Join(dir, name+".pprof"))
	b.benchHTTP(c, "/bench/cpu?start="+path)
}

func (b *bench) profileStopOn(c *cluster, name string) {
	if c == nil || c.pprof == "" {
		return
	}
	b.benchHTTP(c, "/bench/cpu?stop=1")
	// A heap profile at the same moment shows what the manager holds; its
	// goroutines (counted by where they wait) and memory statistics show
	// the rest of its RSS, mostly their stacks.
	b.saveHTTP(c, "/debug/pprof/heap", name+".heap.pprof")
	b.saveHTTP(c, "/debug/pprof/goroutine?debug=1", name+".goroutines.txt")
	b.saveHTTP(c, "/bench/memstats", name+".memstats.json")
}

// saveHTTP saves what the manager's pprof server answers at path in
// <out>/profiles/file.
func (b *bench) saveHTTP(c *cluster, path, file string) {
	resp, err := http.Get("http://" + c.pprof + path)
	if err != nil {
		b.logf("pprof %s: %v", path, err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(filepath.Join(b.out, "profiles", file))
	if err != nil {
		b.logf("pprof %s: %v", path, err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		b.logf("pprof %s: %v", path, err)
	}
}

func (b *bench) benchHTTP(c *cluster, path string) {
	resp, err := http.Get("http://" + c.pprof + path)
	if err != nil {
		b.logf("pprof %s: %v", path, err)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}
