package main

import (
	"runtime/debug"
	"testing"
)

func TestTuneGC(t *testing.T) {
	const def = 100
	t.Cleanup(func() { debug.SetGCPercent(def) })
	for _, c := range []struct {
		cmd, gogc string
		want      int
	}{
		{"run", "", clientGCPercent},
		{"logs", "", clientGCPercent},
		{"", "", clientGCPercent}, // devops with no command prints help
		{"run", "50", def},        // GOGC decides
		{"manager", "", def},
		{"worker", "", def},
	} {
		debug.SetGCPercent(def)
		tuneGC(c.cmd, func(k string) string {
			if k == "GOGC" {
				return c.gogc
			}
			return ""
		})
		if got := debug.SetGCPercent(def); got != c.want {
			t.Errorf("command %q, GOGC=%q: GC percent %d, want %d", c.cmd, c.gogc, got, c.want)
		}
	}
}
