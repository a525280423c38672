package cli

import (
	"slices"
	"strings"
	"testing"
)

func TestExpandWorkers(t *testing.T) {
	tests := []struct {
		in   []string
		want []string
	}{
		{[]string{"w1", "w2"}, []string{"w1", "w2"}},
		{[]string{"web[1-3]"}, []string{"web1", "web2", "web3"}},
		// The flag cut "web[1-2,7]" at its comma; the pieces join again.
		{[]string{"web[1-2", "7]", "db"}, []string{"web1", "web2", "web7", "db"}},
		{[]string{"db[08-10]"}, []string{"db08", "db09", "db10"}},
		{[]string{"r[1-2]n[1-2].dc"}, []string{"r1n1.dc", "r1n2.dc", "r2n1.dc", "r2n2.dc"}},
		{[]string{"x[5]"}, []string{"x5"}},
	}
	for _, tt := range tests {
		got, err := expandWorkers(tt.in)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("expandWorkers(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range [][]string{{"w[1-3"}, {"w1-3]"}, {"w[3-1]"}, {"w[a-b]"}, {"w[]"}, {"w[-2]"}, {"w[1-1000000]"}} {
		if got, err := expandWorkers(bad); err == nil {
			t.Errorf("expandWorkers(%q) = %q, want an error", bad, got)
		}
	}
}

func TestCompressWorkers(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{[]string{"w2", "w1", "w3"}, "w[1-3]"},
		{[]string{"web07", "web01", "web02", "web03"}, "web[01-03,07]"},
		{[]string{"w9", "w10", "w11"}, "w9,w[10-11]"},
		{[]string{"db", "w1"}, "db,w1"},
		{[]string{"a1b", "a1c"}, "a1b,a1c"},
		{[]string{"r1n1", "r1n2", "r2n1"}, "r1n[1-2],r2n1"},
		{[]string{"w1", "w1"}, "w1"},
	}
	for _, tt := range tests {
		if got := compressWorkers(tt.in); got != tt.want {
			t.Errorf("compressWorkers(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	// What it writes expands back to the names.
	names := []string{"web01", "web02", "web05", "web10", "db1", "x"}
	back, err := expandWorkers(strings.Split(compressWorkers(names), ","))
	slices.Sort(back)
	want := slices.Sorted(slices.Values(names))
	if err != nil || !slices.Equal(back, want) {
		t.Errorf("expand(compress(%q)) = %q, %v", names, back, err)
	}
}
