// Package retry holds the backoff that every reconnecting loop uses: capped
// exponential delays with jitter, so that many workers reconnecting to a
// restarted manager do not arrive in lockstep; and how our gRPC clients
// connect (Connect).
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff yields growing delays between Min and Max. The zero value is not
// usable; set Min and Max.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// Next returns the next delay: the step doubles each call up to Max, and the
// delay is drawn between half the step and the step.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.Min
	} else {
		b.cur = min(b.cur*2, b.Max)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

// Reset starts the delays again from Min.
func (b *Backoff) Reset() { b.cur = 0 }

// Sleep waits for d or until ctx ends, and returns ctx.Err() in that case.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
