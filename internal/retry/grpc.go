package retry

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Connect is how each of our gRPC clients (the manager's to its workers, a
// worker's to its manager, the CLI's) connects. grpc's own defaults give a
// try that hears nothing (a firewall that drops it, a host that is gone) 20
// s, and space tries out to two minutes. Here a try gives up after 5 s, and
// tries come at least every 5 s: a worker reconnects to a restarted manager
// within seconds, and so does a follower whose manager was gone for most of
// its minute; a command that never reached its manager fails in its 5 s.
func Connect() grpc.DialOption {
	return grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
		MinConnectTimeout: 5 * time.Second,
	})
}
