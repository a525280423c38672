//go:build !linux

package store

// StopNATSSampler does nothing off Linux: there nats-server's sampler has
// no timer (most systems) or one that re-arms whatever happens (macOS), so
// there is no variable to point elsewhere (see sampler_linux.go).
func StopNATSSampler() {}
