package scheduler

import "testing"

// FuzzParseSelector: no input panics, and what parses prints back to a
// selector that parses the same way.
func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"", "zone=a", "zone!=a", "zone in (a,b)", "zone notin (a)", "zone", "!zone", "a=b,c in (d, e),!f",
		"in (", "a in ()", "a==b", "=", ",", "a=b,,", "x in (a,b", "\x00", "é=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		sel, err := ParseSelector(text)
		if err != nil {
			return
		}
		labels := map[string]string{"zone": "a", "env": "prod"}
		again, err := ParseSelector(sel.String())
		if err != nil {
			t.Fatalf("ParseSelector(%q) ok, but its String %q does not parse: %v", text, sel.String(), err)
		}
		if sel.Matches(labels) != again.Matches(labels) {
			t.Fatalf("ParseSelector(%q) and its String %q match differently", text, sel.String())
		}
	})
}
