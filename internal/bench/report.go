//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Summary condenses repeated measurements of one quantity.
type Summary struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	P99    float64 `json:"p99"`
	P1     float64 `json:"p1"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// summarize returns the median, p99 and p1 (nearest rank), min and max of
// xs. An empty xs gives the zero Summary.
func summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return Summary{N: len(s), Median: median(s), P99: percentile(s, 99), P1: percentile(s, 1), Min: s[0], Max: s[len(s)-1]}
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []float64, p float64) float64 {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// Row is one line of the results table.
type Row struct {
	Scenario string `json:"scenario"`
	Unit     string `json:"unit"`
	// Rate says more is better (commands or bytes a second): the table's
	// tail column then shows the slow end, p1, not p99. The first round of
	// a burst can be the slow one, and a p99 of a rate showed the fastest.
	Rate bool     `json:"rate,omitempty"`
	Ours *Summary `json:"ours,omitempty"`
	// Baseline names what Ours is compared with; BaseMedian is its median.
	Baseline   string   `json:"baseline,omitempty"`
	BaseMedian *float64 `json:"baseline_median,omitempty"`
	// Ratio is Ours.Median / BaseMedian.
	Ratio *float64 `json:"ratio,omitempty"`
	Goal  string   `json:"goal"`
	// Met is "yes", "no" or "n/a" (not measured, or no goal on this line).
	Met  string `json:"met"`
	Note string `json:"note,omitempty"`
}

// Environment is where the run happened.
type Environment struct {
	Kernel     string  `json:"kernel"`
	CPUModel   string  `json:"cpu_model"`
	CPUs       int     `json:"cpus"`
	MemoryGiB  float64 `json:"memory_gib"`
	GOMAXPROCS int     `json:"gomaxprocs"`
	Go         string  `json:"go"`
	GRPC       string  `json:"grpc_go"`
	Devops     string  `json:"devops_version"`
	TLS        bool    `json:"tls"`
	Processes  string  `json:"processes"`
	// Storage is the file system of the manager's and workers' data.
	Storage string `json:"storage"`
}

// Baseline says whether a baseline tool could be used, and why not.
type Baseline struct {
	Name      string `json:"name"`
	Available bool   `json:"available"`
	Version   string `json:"version,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// Results is what a run writes to results.json.
type Results struct {
	Started   time.Time   `json:"started"`
	Duration  string      `json:"duration"`
	Quick     bool        `json:"quick"`
	Command   string      `json:"command"`
	Env       Environment `json:"environment"`
	Baselines []Baseline  `json:"baselines"`
	Rows      []Row       `json:"rows"`
	Errors    []string    `json:"errors,omitempty"`
}

// fmtNum prints a figure with about three significant digits.
func fmtNum(v float64) string {
	a := math.Abs(v)
	switch {
	case v == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// markdownTable renders the rows as a Markdown table.
func markdownTable(rows []Row) string {
	var b strings.Builder
	b.WriteString("| scenario | ours: median | ours: slow tail (p99; p1 of a rate) | baseline | baseline: median | ratio (ours ÷ baseline) | goal | met |\n")
	b.WriteString("| --- | ---: | ---: | --- | ---: | ---: | --- | :---: |\n")
	cell := func(s string) string { return strings.ReplaceAll(s, "|", "\\|") }
	for _, r := range rows {
		med, tail, base, ratio := "—", "—", "—", "—"
		if r.Ours != nil {
			med = fmtNum(r.Ours.Median) + " " + r.Unit
			t := r.Ours.P99
			if r.Rate {
				t = r.Ours.P1
			}
			tail = fmtNum(t) + " " + r.Unit
		}
		if r.BaseMedian != nil {
			base = fmtNum(*r.BaseMedian) + " " + r.Unit
		}
		if r.Ratio != nil {
			ratio = fmtNum(*r.Ratio) + "x"
		}
		name := r.Scenario
		if r.Note != "" {
			name += " (" + r.Note + ")"
		}
		bl := r.Baseline
		if bl == "" {
			bl = "—"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", cell(name), med, tail, cell(bl), base, ratio, cell(r.Goal), r.Met)
	}
	return b.String()
}

// markdown renders the whole report: environment, baselines and the table.
func markdown(res *Results) string {
	var b strings.Builder
	mode := "full"
	if res.Quick {
		mode = "QUICK (smaller sizes, fewer repetitions: not comparable with a full run)"
	}
	fmt.Fprintf(&b, "Run %s, %s, took %s; mode: %s; command: `%s`.\n\n", res.Started.UTC().Format(time.RFC3339), "loopback only", res.Duration, mode, res.Command)
	e := res.Env
	fmt.Fprintf(&b, "Machine: %s, %d CPUs, %.1f GiB RAM, Linux %s; %s, grpc-go %s, GOMAXPROCS %d; %s; devops %s; %s; their data (the bench's temporary directory, under $TMPDIR) on %s.\n\n",
		e.CPUModel, e.CPUs, e.MemoryGiB, e.Kernel, e.Go, e.GRPC, e.GOMAXPROCS, tlsNote(e.TLS), e.Devops, e.Processes, e.Storage)
	var bl []string
	for _, x := range res.Baselines {
		if x.Available {
			bl = append(bl, fmt.Sprintf("%s (%s)", x.Name, x.Version))
		} else {
			bl = append(bl, fmt.Sprintf("%s unavailable: %s", x.Name, x.Reason))
		}
	}
	fmt.Fprintf(&b, "Baselines: %s.\n\n", strings.Join(bl, "; "))
	b.WriteString(markdownTable(res.Rows))
	if len(res.Errors) > 0 {
		b.WriteString("\nErrors:\n")
		for _, e := range res.Errors {
			fmt.Fprintf(&b, "- %s\n", e)
		}
	}
	return b.String()
}

func tlsNote(on bool) string {
	if on {
		return "TLS on, as by default (TLS 1.3 on every connection, the CLI with an API token, workers and simulated workers joined with the join token)"
	}
	return "TLS off (--insecure: plaintext, no tokens)"
}

// write saves results.json and results.md in dir and prints the Markdown to w.
func write(dir string, res *Results, w io.Writer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	j, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(j, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results.json: %w", err)
	}
	md := markdown(res)
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md), 0o644); err != nil {
		return fmt.Errorf("write results.md: %w", err)
	}
	_, err = io.WriteString(w, md)
	return err
}

// compare fills a row comparing ours with a baseline median; goal decides
// Met from the figures and returns "yes", "no" or "n/a" (nil: "n/a"). A
// baseline with no figures reaches goal as the zero Summary.
func compare(r Row, ours []float64, base []float64, goal func(ours, base Summary) string) Row {
	if len(ours) > 0 {
		s := summarize(ours)
		r.Ours = &s
	}
	var bs Summary
	if len(base) > 0 {
		bs = summarize(base)
		r.BaseMedian = &bs.Median
		if bs.Median != 0 && r.Ours != nil {
			ratio := r.Ours.Median / bs.Median
			r.Ratio = &ratio
		}
	}
	r.Met = "n/a"
	if goal != nil && r.Ours != nil {
		r.Met = goal(*r.Ours, bs)
	}
	return r
}

// yesNo turns a goal check into a Met cell.
func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

// sortRows orders rows by scenario number, keeping the order within one.
func sortRows(rows []Row) {
	num := func(s string) int {
		n := 0
		for _, c := range s {
			if c < '0' || c > '9' {
				break
			}
			n = n*10 + int(c-'0')
		}
		if n == 0 {
			return 99
		}
		return n
	}
	sort.SliceStable(rows, func(i, j int) bool { return num(rows[i].Scenario) < num(rows[j].Scenario) })
}
