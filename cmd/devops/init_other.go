//go:build !unix

package main

// runInit has nothing to run: workers, and so the inits of their commands,
// are Unix only.
func runInit(args []string) (code int, ok bool) { return 0, false }
