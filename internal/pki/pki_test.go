package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"
	"time"
)

// TestGeneration: a worker certificate carries its name's generation
// beside its role, and one whose generation we did not write reads lower
// than any.
func TestGeneration(t *testing.T) {
	ca, err := NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	for _, gen := range []int{0, 1, 7} {
		c, err := ca.IssueKeyPair(Leaf{CommonName: "w1", Role: RoleWorker, TTL: time.Hour, Generation: gen})
		if err != nil {
			t.Fatal(err)
		}
		if got := Generation(c.Leaf); got != gen {
			t.Errorf("Generation of a certificate issued with %d = %d", gen, got)
		}
		if got := Role(c.Leaf); got != RoleWorker {
			t.Errorf("Role with generation %d = %q", gen, got)
		}
	}
	bad := &x509.Certificate{Subject: pkix.Name{OrganizationalUnit: []string{RoleWorker, "generation=x"}}}
	if got := Generation(bad); got >= 0 {
		t.Errorf("Generation of a malformed one = %d, want below 0", got)
	}
}
