package testcluster

import "time"

// CrashWorker stops worker i as kill -9 would, as far as the cluster can
// tell: its connections are cut, it does not deregister, and what it runs
// goes on under the processes' shims for StartWorker(i) to adopt.
func (c *Cluster) CrashWorker(i int) {
	c.mu.Lock()
	n := c.workers[i]
	c.workers[i] = nil
	c.mu.Unlock()
	if n == nil {
		return
	}
	n.w.Crash()
	if err := <-n.done; err != nil {
		c.tb.Errorf("worker %d crashed with: %v", i, err)
	}
	n.cancel()
}

// terminateProcesses ends what the running workers still run: workers that
// stop leave their processes running, and a test must not leave any.
func (c *Cluster) terminateProcesses() {
	c.mu.Lock()
	var ns []*node
	for _, n := range c.workers {
		if n != nil {
			ns = append(ns, n)
		}
	}
	c.mu.Unlock()
	for _, n := range ns {
		n.w.TerminateAll(time.Second)
	}
}
