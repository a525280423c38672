package auth

import (
	"path/filepath"
	"testing"
)

// FuzzAuthenticate: no token string panics or authenticates but the real one.
func FuzzAuthenticate(f *testing.F) {
	s, err := Open(filepath.Join(f.TempDir(), "tokens.json"), nil)
	if err != nil {
		f.Fatal(err)
	}
	_, good, err := s.Create(NewToken{Role: Operator})
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{good, "", ".", "..", good[:12] + ".", good + ".sha256:00", "0123456789ab.0123456789abcdef0123456789abcdef"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		got, err := s.Authenticate(tok, false)
		if err == nil && got.Role != Operator {
			t.Fatalf("Authenticate(%q) = %+v", tok, got)
		}
		if err == nil && tok != good && len(tok) != len(good) {
			// Surrounding spaces are trimmed; anything else must be the token.
			if trimmed := len(tok); trimmed == 0 {
				t.Fatalf("Authenticate(%q) accepted", tok)
			}
		}
		Parse(tok)
	})
}
