//go:build race

package grpcbuf

// raceEnabled: the race detector's sync.Pool drops a share of what is put
// back, on purpose, so what a pool saves is counted with room for that.
const raceEnabled = true
