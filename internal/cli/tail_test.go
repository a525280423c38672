package cli

import (
	"testing"

	"github.com/devops-platform/devops"
)

func TestLastLines(t *testing.T) {
	// "a\nbb\nc" over three chunks, the first starting at offset 10 (the
	// output before it was dropped).
	split := func(s string, offset int64, cuts ...int) []devops.Chunk {
		var cs []devops.Chunk
		prev := 0
		for _, c := range append(cuts, len(s)) {
			cs = append(cs, devops.Chunk{Offset: offset + int64(prev), Data: []byte(s[prev:c])})
			prev = c
		}
		return cs
	}
	tests := []struct {
		out   string
		n     int
		start int64 // offset in out
		ok    bool
	}{
		{"a\nbb\nc", 1, 5, true},
		{"a\nbb\nc", 2, 2, true},
		{"a\nbb\nc", 3, 0, false},
		{"a\nbb\nc\n", 1, 5, true},
		{"a\nbb\nc\n", 2, 2, true},
		{"a\nbb\nc\n", 0, 7, true},
		{"a\n\n\n", 2, 2, true},
		{"", 3, 0, true},
	}
	for _, tt := range tests {
		for _, cuts := range [][]int{nil, {1}, {2, 3}} {
			if len(cuts) > 0 && cuts[len(cuts)-1] >= len(tt.out) {
				continue
			}
			chunks := split(tt.out, 10, cuts...)
			if tt.out == "" {
				chunks = nil
			}
			start, ok := lastLines(chunks, 10+int64(len(tt.out)), tt.n)
			if start != 10+tt.start || ok != tt.ok {
				t.Errorf("lastLines(%q cut at %v, %d) = %d, %v; want %d, %v", tt.out, cuts, tt.n, start-10, ok, tt.start, tt.ok)
			}
		}
	}
}
