package auth

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestWorkerRevocation: revoking a name refuses it and every certificate
// it was issued; admitting it again lets it join, with a certificate of a
// new generation, while the old ones stay refused, across a reopen.
func TestWorkerRevocation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json")
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if gen, err := s.WorkerGeneration("w1"); gen != 0 || err != nil {
		t.Fatalf("WorkerGeneration of a new name = %d, %v", gen, err)
	}
	if err := s.CheckWorker("w1", 0); err != nil {
		t.Fatalf("CheckWorker of a new name = %v", err)
	}
	if err := s.RevokeWorker("w1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WorkerGeneration("w1"); !errors.Is(err, ErrNameRevoked) {
		t.Errorf("WorkerGeneration of a revoked name = %v, want ErrNameRevoked", err)
	}
	if err := s.CheckWorker("w1", 0); !errors.Is(err, ErrNameRevoked) {
		t.Errorf("CheckWorker of a revoked name = %v, want ErrNameRevoked", err)
	}
	if err := s.CheckWorker("w2", 0); err != nil {
		t.Errorf("CheckWorker of another name = %v", err)
	}
	if err := s.AdmitWorker("w1"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Store{s, reopen(t, path)} {
		if err := s.CheckWorker("w1", 0); !errors.Is(err, ErrCertRevoked) {
			t.Errorf("CheckWorker of a certificate from before the revocation = %v, want ErrCertRevoked", err)
		}
		gen, err := s.WorkerGeneration("w1")
		if gen != 1 || err != nil {
			t.Fatalf("WorkerGeneration once admitted = %d, %v; want 1", gen, err)
		}
		if err := s.CheckWorker("w1", gen); err != nil {
			t.Errorf("CheckWorker of a certificate issued after = %v", err)
		}
	}
}

// TestWorkerRevocationFromOldStore: a store written when each certificate
// was recorded by serial keeps its revocations.
func TestWorkerRevocationFromOldStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json")
	old := `{"tokens": {}, "certs": {"a1": {"name": "w1", "not_after": "2099-01-01T00:00:00Z"}, "b2": {"name": "w2", "not_after": "2099-01-01T00:00:00Z"}},
"revoked_certs": {"a1": "2099-01-01T00:00:00Z"}, "revoked_names": {"w3": "2026-01-01T00:00:00Z"}}`
	if err := os.WriteFile(path, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	s := reopen(t, path)
	if err := s.CheckWorker("w1", 0); !errors.Is(err, ErrCertRevoked) {
		t.Errorf("w1, whose certificate was revoked: %v, want ErrCertRevoked", err)
	}
	if err := s.CheckWorker("w2", 0); err != nil {
		t.Errorf("w2, not revoked: %v", err)
	}
	if err := s.CheckWorker("w3", 0); !errors.Is(err, ErrNameRevoked) {
		t.Errorf("w3, revoked: %v, want ErrNameRevoked", err)
	}
	if err := s.AdmitWorker("w3"); err != nil {
		t.Fatal(err)
	}
	if err := reopen(t, path).CheckWorker("w3", 0); !errors.Is(err, ErrCertRevoked) {
		t.Errorf("w3 admitted, with a certificate from before: %v, want ErrCertRevoked", err)
	}
}

func reopen(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
