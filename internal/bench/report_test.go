//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSummarize(t *testing.T) {
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(100 - i) // 100..1, unsorted
	}
	tests := []struct {
		name string
		in   []float64
		want Summary
	}{
		{"empty", nil, Summary{}},
		{"one", []float64{3}, Summary{N: 1, Median: 3, P99: 3, P1: 3, Min: 3, Max: 3}},
		{"even", []float64{4, 1, 3, 2}, Summary{N: 4, Median: 2.5, P99: 4, P1: 1, Min: 1, Max: 4}},
		{"odd", []float64{5, 1, 3}, Summary{N: 3, Median: 3, P99: 5, P1: 1, Min: 1, Max: 5}},
		{"hundred", hundred, Summary{N: 100, Median: 50.5, P99: 99, P1: 1, Min: 1, Max: 100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := summarize(tt.in); got != tt.want {
				t.Errorf("summarize(%v) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestCompare(t *testing.T) {
	faster := func(o, b Summary) string {
		if b.N == 0 {
			return "n/a"
		}
		return yesNo(o.Median < b.Median)
	}
	tests := []struct {
		name      string
		ours, bas []float64
		goal      func(o, b Summary) string
		wantMet   string
		wantRatio float64 // 0: no ratio
	}{
		{"met", []float64{1, 2, 3}, []float64{4, 4, 4}, faster, "yes", 0.5},
		{"missed", []float64{5}, []float64{4}, faster, "no", 1.25},
		{"no baseline", []float64{5}, nil, faster, "n/a", 0},
		{"no goal", []float64{5}, []float64{5}, nil, "n/a", 1},
		{"not measured", nil, []float64{5}, faster, "n/a", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := compare(Row{Scenario: "s", Unit: "ms"}, tt.ours, tt.bas, tt.goal)
			if r.Met != tt.wantMet {
				t.Errorf("Met = %q, want %q", r.Met, tt.wantMet)
			}
			switch {
			case tt.wantRatio == 0 && r.Ratio != nil:
				t.Errorf("Ratio = %v, want none", *r.Ratio)
			case tt.wantRatio != 0 && (r.Ratio == nil || *r.Ratio != tt.wantRatio):
				t.Errorf("Ratio = %v, want %v", r.Ratio, tt.wantRatio)
			}
		})
	}
}

func TestMarkdownTable(t *testing.T) {
	rows := []Row{
		compare(Row{Scenario: "7. b | c", Unit: "ms", Baseline: "ssh", Goal: "< 5"}, []float64{2}, []float64{4}, func(o, _ Summary) string { return yesNo(o.Median < 5) }),
		{Scenario: "1. a", Goal: "—", Met: "n/a", Note: "error: boom"},
		// A rate's tail is its slow end: one slow round of five shows.
		compare(Row{Scenario: "3. r", Unit: "cmd/s", Rate: true, Goal: "—"}, []float64{90, 25, 95, 88, 92}, nil, nil),
	}
	sortRows(rows)
	got := markdownTable(rows)
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != 5 {
		t.Fatalf("markdownTable has %d lines, want 5:\n%s", len(lines), got)
	}
	if !strings.HasPrefix(lines[2], "| 1. a (error: boom) |") {
		t.Errorf("first row = %q, want scenario 1 first", lines[2])
	}
	if want := `| 3. r | 90.0 cmd/s | 25.0 cmd/s | — | — | — | — | n/a |`; lines[3] != want {
		t.Errorf("rate row = %q, want %q", lines[3], want)
	}
	if want := `| 7. b \| c | 2.00 ms | 2.00 ms | ssh | 4.00 ms | 0.5x | < 5 | yes |`; lines[4] != want {
		t.Errorf("row = %q, want %q", lines[4], want)
	}
}

func TestFmtNum(t *testing.T) {
	tests := []struct {
		in   float64
		want string
	}{{0, "0"}, {0.01234, "0.0123"}, {1.234, "1.23"}, {12.34, "12.3"}, {1234.5, "1234"}}
	for _, tt := range tests {
		if got := fmtNum(tt.in); got != tt.want {
			t.Errorf("fmtNum(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestLoopbackIP(t *testing.T) {
	seen := map[string]bool{}
	for i := range 20000 {
		ip := loopbackIP(i)
		if seen[ip] || !strings.HasPrefix(ip, "127.") {
			t.Fatalf("loopbackIP(%d) = %q: repeated or not loopback", i, ip)
		}
		seen[ip] = true
	}
}

// TestEnvironmentNamesTheVersion: the report names the binary's version
// once ("devops 1a2b3c4"), not as `--version` words it ("devops devops
// version 1a2b3c4", until session 36).
func TestEnvironmentNamesTheVersion(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "devops")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho 'devops version 1a2b3c4'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := environment(bin).Devops; got != "1a2b3c4" {
		t.Errorf("environment's devops version = %q, want 1a2b3c4", got)
	}
}
