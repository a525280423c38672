package manager

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devops-platform/devops"
)

// chunks returns what receive reads: each of data, then io.EOF.
func chunks(data ...string) func() ([]byte, error) {
	return func() ([]byte, error) {
		if len(data) == 0 {
			return nil, io.EOF
		}
		d := data[0]
		data = data[1:]
		return []byte(d), nil
	}
}

// TestUploads: an upload is named by its SHA-256, and only such a name of
// an upload that is there is taken (no path of the caller's reaches the
// disk); one over the bound is refused and leaves nothing; uploads an hour
// old go.
func TestUploads(t *testing.T) {
	dir := t.TempDir()
	in := inputs{dir: filepath.Join(dir, "input"), uploads: filepath.Join(dir, "upload"), maxUpload: 11}
	id, n, err := in.receive(chunks("hello ", "world"))
	if want := fmt.Sprintf("%x", sha256.Sum256([]byte("hello world"))); err != nil || id != want || n != 11 {
		t.Fatalf("receive = %q, %d, %v; want %s, 11", id, n, err, want)
	}
	if size, err := in.uploaded(id); err != nil || size != 11 {
		t.Errorf("uploaded(%s) = %d, %v; want 11", id, size, err)
	}
	if err := in.linkUpload(id, "p1"); err != nil {
		t.Fatal(err)
	}
	if data, err := in.read("p1", 11); err != nil || string(data) != "hello world" {
		t.Errorf("input of p1 = %q, %v", data, err)
	}
	for _, bad := range []string{"../../../etc/passwd", "0000", id[:63] + "g", fmt.Sprintf("%x", sha256.Sum256(nil))} {
		if _, err := in.uploaded(bad); !errors.Is(err, devops.ErrInvalid) {
			t.Errorf("uploaded(%q) = %v, want ErrInvalid", bad, err)
		}
	}

	if _, _, err := in.receive(chunks("0123456789", "xy")); !errors.Is(err, devops.ErrInvalid) || !strings.Contains(err.Error(), "bound of 11 bytes") {
		t.Errorf("receive of 12 bytes with a bound of 11 = %v, want ErrInvalid that says the bound", err)
	}
	if ents, _ := os.ReadDir(in.uploads); len(ents) != 1 {
		t.Errorf("uploads after a refused one: %v, want the first only", ents)
	}

	// An old upload that a process still reads stays: run --retries
	// names it again once that ended. Released, it stays uploadTTL more.
	old := time.Now().Add(-uploadTTL - time.Minute)
	prune := func() {
		t.Helper()
		if err := os.Chtimes(in.uploadPath(id), old, old); err != nil {
			t.Fatal(err)
		}
		if err := in.pruneUploads(time.Now().Add(-uploadTTL)); err != nil {
			t.Fatal(err)
		}
	}
	prune()
	if _, err := os.Stat(in.uploadPath(id)); err != nil {
		t.Errorf("an upload p1 still reads was pruned: %v", err)
	}
	in.release("p1") // the upload is still as old as prune made it
	if _, err := in.read("p1", 11); !errors.Is(err, errNoInput) {
		t.Errorf("input of p1 after its release: %v, want none", err)
	}
	if err := in.pruneUploads(time.Now().Add(-uploadTTL)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(in.uploadPath(id)); err != nil {
		t.Errorf("an upload released just now was pruned: %v", err)
	}
	prune()
	if _, err := in.uploaded(id); !errors.Is(err, devops.ErrInvalid) {
		t.Errorf("an upload past %v that nothing reads is still taken: %v", uploadTTL, err)
	}
}
