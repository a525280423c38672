//go:build linux && !benchpprof

package main

import (
	"fmt"
	"os"
)

// managerMain would run a manager with pprof; this build has none, so that
// the default bench does not compile internal/manager in (it only needs
// bin/devops). Build with -tags benchpprof (make bench PPROF=1) for it.
func managerMain([]string) int {
	fmt.Fprintln(os.Stderr, "bench: built without the benchpprof tag; use make bench PPROF=1")
	return 2
}
