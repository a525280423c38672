package client

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A follower rides over each outage of the manager, not only the first:
// the window starts again once the manager has answered.
func TestEachOutageGetsItsOwnWindow(t *testing.T) {
	c := &Client{Reconnect: 300 * time.Millisecond, FirstContact: 300 * time.Millisecond}
	unavailable := status.Error(codes.Unavailable, "manager gone")
	calls := 0
	err := c.retryUnavailable(context.Background(), func() error {
		calls++
		switch calls {
		case 1: // a stream that was answered, then broke: the first outage
			c.noteAnswer(nil)
			return unavailable
		case 2: // the manager is back: the stream is answered and runs
			// longer than the window, then breaks again
			c.noteAnswer(nil)
			time.Sleep(2 * c.Reconnect)
			return unavailable
		case 3: // still out, within the second outage's window
			return unavailable
		}
		return nil
	})
	if err != nil || calls != 4 {
		t.Fatalf("retryUnavailable = %v after %d calls, want nil after 4: the second outage had its own window", err, calls)
	}
}

// An outage that lasts past the window ends the call with the manager's
// last error.
func TestAnOutageEndsAfterItsWindow(t *testing.T) {
	c := &Client{Reconnect: 200 * time.Millisecond, FirstContact: 200 * time.Millisecond}
	c.noteAnswer(nil)
	start := time.Now()
	err := c.retryUnavailable(context.Background(), func() error {
		return status.Error(codes.Unavailable, "manager gone")
	})
	if status.Code(err) != codes.Unavailable || time.Since(start) < c.Reconnect {
		t.Fatalf("retryUnavailable = %v after %v, want Unavailable after %v", err, time.Since(start), c.Reconnect)
	}
}

// A manager that never answered has been out since the first try: a try
// that took the whole first-contact window is not followed by another.
func TestFirstContactCountsFromTheFirstTry(t *testing.T) {
	c := &Client{Reconnect: time.Minute, FirstContact: 200 * time.Millisecond}
	var notes []string
	c.Notify = func(msg string) { notes = append(notes, msg) }
	calls := 0
	err := c.retryUnavailable(context.Background(), func() error {
		calls++
		time.Sleep(300 * time.Millisecond) // a connect that timed out
		return status.Error(codes.Unavailable, "i/o timeout")
	})
	if status.Code(err) != codes.Unavailable || calls != 1 {
		t.Fatalf("retryUnavailable = %v after %d tries, want Unavailable after 1", err, calls)
	}
	if len(notes) != 0 {
		t.Errorf("it said %q, want no word of trying again when no time is left", notes)
	}
}
