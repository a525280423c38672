package scheduler

import (
	"errors"
	"testing"

	"github.com/devops-platform/devops"
)

func TestSelectorMatches(t *testing.T) {
	labels := map[string]string{"zone": "a", "env": "prod", "gpu": ""}
	tests := []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"zone=a", true},
		{"zone==a", true},
		{"zone=b", false},
		{"zone!=b", true},
		{"zone!=a", false},
		{"missing!=a", true},
		{"zone in (a,b)", true},
		{"zone in (b, c)", false},
		{"zone notin (b,c)", true},
		{"zone notin (a)", false},
		{"missing notin (a)", true},
		{"gpu", true},
		{"missing", false},
		{"!missing", true},
		{"!zone", false},
		{"zone in (a,b),env!=dev", true},
		{"zone in (a,b), env=dev", false},
		{" zone = a , env = prod ", true},
	}
	for _, tt := range tests {
		sel, err := ParseSelector(tt.sel)
		if err != nil {
			t.Errorf("ParseSelector(%q) = %v", tt.sel, err)
			continue
		}
		if got := sel.Matches(labels); got != tt.want {
			t.Errorf("ParseSelector(%q).Matches(%v) = %v, want %v", tt.sel, labels, got, tt.want)
		}
	}
}

func TestParseSelectorRejectsMalformed(t *testing.T) {
	for _, s := range []string{"zone in a", "zone in (a", "zone in ()", "=a", "zone=a,,env=b", "zo ne=a", "zone=a b", "zone~a", "!", "zone in (a,b) x"} {
		if _, err := ParseSelector(s); !errors.Is(err, devops.ErrInvalid) {
			t.Errorf("ParseSelector(%q) = %v, want ErrInvalid", s, err)
		}
	}
}

func TestPickLeastLoaded(t *testing.T) {
	ws := []devops.Worker{
		{ID: "1", Name: "busy", State: devops.WorkerUp, Capacity: 4, Running: 3},
		{ID: "2", Name: "idle", State: devops.WorkerUp, Capacity: 4, Running: 1, Labels: map[string]string{"zone": "a"}},
		{ID: "3", Name: "down", State: devops.WorkerDown, Capacity: 4},
		{ID: "4", Name: "full", State: devops.WorkerUp, Capacity: 1, Running: 1, Labels: map[string]string{"zone": "b"}},
		{ID: "5", Name: "draining", State: devops.WorkerDraining, Capacity: 4, Labels: map[string]string{"zone": "c"}},
	}
	w, err := Pick(ws, Selector{})
	if err != nil || w.Name != "idle" {
		t.Errorf("Pick = %s, %v; want idle", w.Name, err)
	}
	sel, _ := ParseSelector("zone=b")
	if _, err := Pick(ws, sel); !errors.Is(err, devops.ErrNoCapacity) {
		t.Errorf("Pick(zone=b) = %v, want ErrNoCapacity", err)
	}
	sel, _ = ParseSelector("zone=c")
	if _, err := Pick(ws, sel); !errors.Is(err, devops.ErrNoMatch) || err.Error() != "no matching worker: the only match draining is draining" {
		t.Errorf("Pick(zone=c) = %v", err)
	}
	sel, _ = ParseSelector("zone=z")
	if _, err := Pick(ws, sel); err == nil || err.Error() != "no matching worker: no worker matches zone=z" {
		t.Errorf("Pick(zone=z) = %v", err)
	}
	if _, err := Pick(nil, Selector{}); err == nil || err.Error() != "no matching worker: no worker is registered" {
		t.Errorf("Pick(none) = %v", err)
	}
}

func TestPickBreaksTiesByLoadThenName(t *testing.T) {
	ws := []devops.Worker{
		{Name: "b", State: devops.WorkerUp, Capacity: 2, Fingerprint: devops.Fingerprint{CPUs: 2}, Metrics: devops.Metrics{Load1: 0.5}},
		{Name: "c", State: devops.WorkerUp, Capacity: 2, Fingerprint: devops.Fingerprint{CPUs: 2}, Metrics: devops.Metrics{Load1: 3}},
		{Name: "a", State: devops.WorkerUp, Capacity: 2, Fingerprint: devops.Fingerprint{CPUs: 2}, Metrics: devops.Metrics{Load1: 3}},
	}
	if w, _ := Pick(ws, Selector{}); w.Name != "b" {
		t.Errorf("Pick = %s, want b (lowest load)", w.Name)
	}
	ws[0].Metrics.Load1 = 3
	if w, _ := Pick(ws, Selector{}); w.Name != "a" {
		t.Errorf("Pick = %s, want a (name breaks the tie)", w.Name)
	}
}
