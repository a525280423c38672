//go:build linux && benchpprof

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	rpprof "runtime/pprof"
	"sync"
	"syscall"
	"time"

	"github.com/devops-platform/devops/internal/manager"
)

// managerMain runs a real manager in this process, as `devops manager`
// would, plus an HTTP server with net/http/pprof and /bench/cpu, so that
// the bench can take CPU profiles of exactly one scenario. It is what the
// bench starts instead of bin/devops manager when run with -pprof.
func managerMain(args []string) int {
	fs := flag.NewFlagSet("as-manager", flag.ContinueOnError)
	var cfg manager.Config
	pprofAddr := fs.String("pprof-addr", "127.0.0.1:0", "address of the pprof server")
	fs.StringVar(&cfg.Listen, "listen", ":50051", "")
	fs.StringVar(&cfg.HTTP, "http", "-", "")
	fs.StringVar(&cfg.DataDir, "data-dir", "./data/manager", "")
	logLevel := fs.String("log-level", "warn", "")
	fs.BoolVar(&cfg.Security.Insecure, "insecure", false, "")
	fs.Float64Var(&cfg.Security.RunRate, "run-rate", 10, "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// At info the manager logs its heap trims, which scenario 7 reads.
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	m, err := manager.New(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	var mu sync.Mutex // protects cpuFile
	var cpuFile *os.File
	mux.HandleFunc("/bench/cpu", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if path := r.URL.Query().Get("start"); path != "" {
			f, err := os.Create(path)
			if err == nil {
				if err = rpprof.StartCPUProfile(f); err != nil {
					f.Close()
				} else {
					cpuFile = f
				}
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
			return
		}
		if cpuFile != nil {
			rpprof.StopCPUProfile()
			cpuFile.Close()
			cpuFile = nil
		}
	})
	// Where the manager's memory is, for the scale scenario: RSS is mostly
	// goroutine stacks and heap, and goroutines per worker are what the
	// design decides.
	mux.HandleFunc("/bench/memstats", func(w http.ResponseWriter, r *http.Request) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"goroutines": runtime.NumGoroutine(), "heap_inuse": ms.HeapInuse, "heap_alloc": ms.HeapAlloc,
			"heap_idle": ms.HeapIdle, "heap_released": ms.HeapReleased, "stack_inuse": ms.StackInuse,
			"sys": ms.Sys, "num_gc": ms.NumGC, "gc_cpu_fraction": ms.GCCPUFraction,
		})
	})
	lis, err := net.Listen("tcp", *pprofAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(lis)
	defer srv.Close()
	if err := m.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
