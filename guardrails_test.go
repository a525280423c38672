package devops_test

import (
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryPackageHasAComment walks the tree: each package says what it
// holds in a package comment.
func TestEveryPackageHasAComment(t *testing.T) {
	dirs := map[string]bool{} // dir -> has a package comment
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "bin" || d.Name() == "data") && path != "." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		dir := filepath.Dir(path)
		dirs[dir] = dirs[dir] || f.Doc != nil
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for dir, ok := range dirs {
		if !ok {
			t.Errorf("package in %s has no package comment", dir)
		}
	}
}

// TestWorkerAndManagerStayApart keeps the two halves of the system from
// importing each other: they meet only through the API.
func TestWorkerAndManagerStayApart(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go tool on PATH")
	}
	tests := []struct{ pkg, forbidden string }{
		{"./internal/worker", "github.com/devops-platform/devops/internal/manager"},
		{"./internal/manager", "github.com/devops-platform/devops/internal/worker"},
		{"./internal/executor", "github.com/devops-platform/devops/internal/manager"},
	}
	for _, tt := range tests {
		out, err := exec.Command("go", "list", "-deps", tt.pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", tt.pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if dep == tt.forbidden {
				t.Errorf("%s imports %s", tt.pkg, tt.forbidden)
			}
		}
	}
}
