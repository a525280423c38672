package cli

import (
	"slices"
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
