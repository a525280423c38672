package testcluster

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/devops-platform/devops/internal/client"
	"github.com/devops-platform/devops/internal/worker"
)

// ManagerDir is the manager's data dir: ca.crt, admin.token, join.token...
func (c *Cluster) ManagerDir() string { return filepath.Join(c.dir, "manager") }

// CAFile is the manager's CA certificate.
func (c *Cluster) CAFile() string { return filepath.Join(c.ManagerDir(), "ca.crt") }

// AdminTokenFile holds the admin token the manager made at first start.
func (c *Cluster) AdminTokenFile() string { return filepath.Join(c.ManagerDir(), "admin.token") }

// JoinToken is the join token the manager made at first start.
func (c *Cluster) JoinToken() string {
	c.tb.Helper()
	b, err := os.ReadFile(filepath.Join(c.ManagerDir(), "join.token"))
	if err != nil {
		c.tb.Fatalf("read join token: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// ClientOptions are what a client needs to reach this cluster with the
// token in tokenFile ("" for none).
func (c *Cluster) ClientOptions(tokenFile string) []client.Option {
	c.tb.Helper()
	if c.opts.Insecure {
		return nil
	}
	tc, err := client.TLSConfig(c.CAFile())
	if err != nil {
		c.tb.Fatalf("cluster CA: %v", err)
	}
	opts := []client.Option{client.WithTLS(tc)}
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			c.tb.Fatalf("read token: %v", err)
		}
		opts = append(opts, client.WithToken(string(b)))
	}
	return opts
}

// cliFlags point the command line at this cluster with the admin token;
// a test may append --token-file to act as someone else.
func (c *Cluster) cliFlags() []string {
	if c.opts.Insecure {
		return []string{"--manager", c.Addr(), "--insecure"}
	}
	return []string{"--manager", c.Addr(), "--ca", c.CAFile(), "--token-file", c.AdminTokenFile()}
}

func (c *Cluster) workerSecurity() worker.SecurityConfig {
	if c.opts.Insecure {
		return worker.SecurityConfig{Insecure: true}
	}
	return worker.SecurityConfig{JoinToken: c.JoinToken()}
}
