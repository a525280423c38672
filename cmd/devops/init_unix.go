//go:build unix

package main

import "github.com/devops-platform/devops/internal/executor"

// runInit runs the init of a command's namespaces: the executor re-runs
// this binary so, with "__init" first.
func runInit(args []string) (code int, ok bool) {
	if len(args) == 0 || args[0] != "__init" {
		return 0, false
	}
	return executor.RunInit(args[1:]), true
}
