package testcluster

import (
	"context"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/devops-platform/devops/internal/cli"
)

// runDevops makes the test binary act as the devops binary when Main sees
// "devops" as its first argument: a test can then run a manager as a real
// process and kill -9 it.
func runDevops(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return cli.Main(ctx, args, cli.Env{Stdout: os.Stdout, Stderr: os.Stderr, LookupEnv: os.LookupEnv})
}

// startManagerProcess starts the manager as a child process of the test
// binary, on the cluster's address and data dir, and waits until it serves.
func (c *Cluster) startManagerProcess() {
	c.tb.Helper()
	addr := c.Addr()
	if _, port, _ := net.SplitHostPort(addr); port == "0" {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			c.tb.Fatalf("pick a port: %v", err)
		}
		addr = lis.Addr().String()
		lis.Close()
	}
	args := []string{"devops", "manager", "--listen", addr, "--http", "-", "--data-dir", c.ManagerDir(),
		"--health-interval", "100ms", "--metrics-interval", "200ms", "--worker-timeout", "2s", "--log-level", "warn"}
	if c.opts.Insecure {
		args = append(args, "--insecure")
	}
	cmd := exec.Command(os.Args[0], args...)
	log, err := os.OpenFile(filepath.Join(c.dir, "manager.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		c.tb.Fatal(err)
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		c.tb.Fatalf("start manager process: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	c.mu.Lock()
	c.addr = addr
	c.manager = &node{done: done, cmd: cmd}
	c.mu.Unlock()
	Eventually(c.tb, 20*time.Second, "the manager process serves", func() bool {
		if _, err := os.Stat(c.AdminTokenFile()); err != nil && !c.opts.Insecure {
			return false
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
}

// KillManager kills the manager process with SIGKILL, as a crash would:
// nothing is flushed or closed. Only with Options.ManagerProcess.
func (c *Cluster) KillManager() {
	c.tb.Helper()
	c.mu.Lock()
	n := c.manager
	c.manager = nil
	c.mu.Unlock()
	if n == nil || n.cmd == nil {
		c.tb.Fatalf("KillManager needs a manager process (Options.ManagerProcess)")
		return
	}
	n.cmd.Process.Kill()
	if err := <-n.done; err == nil {
		c.tb.Errorf("killed manager exited cleanly")
	}
}

func (c *Cluster) stopManagerProcess(n *node) {
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-n.done:
		if err != nil {
			c.tb.Errorf("manager process stopped with: %v", err)
		}
	case <-time.After(20 * time.Second):
		n.cmd.Process.Kill()
		<-n.done
		c.tb.Errorf("manager process did not stop within 20s")
	}
}
