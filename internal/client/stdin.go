package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/devops-platform/devops"
	pb "github.com/devops-platform/devops/api/devops/v1"
)

// UploadStdin sends the manager a standard input too large for a request
// (over devops.MaxStdin): head, then rest to its end. It answers the
// upload's id, for Spec.StdinUpload, and its size. While the manager is
// unreachable it tries again as other calls do, until it has read from
// rest: a pipe is read once.
func (c *Client) UploadStdin(ctx context.Context, head []byte, rest io.Reader) (string, int64, error) {
	var resp *pb.UploadStdinResponse
	var touched atomic.Bool // rest was read from
	send := func() error {
		// Cancelled, not closed, when the read fails: a close would
		// have the manager keep what it got as a whole upload.
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := c.api.UploadStdin(sctx)
		if err != nil {
			return err
		}
		// The answer, or why the call broke, is awaited beside the sends:
		// a break is known at once, not at the next read of rest, which
		// waits on whatever produces the input. A read that waits is left
		// behind; it ends with the process, or when rest does.
		answer := make(chan error, 1)
		var got pb.UploadStdinResponse
		go func() { answer <- stream.RecvMsg(&got) }()
		sent := make(chan error, 1)
		go func() { sent <- sendStdin(stream, head, rest, &touched) }()
		select {
		case err := <-sent:
			if errors.Is(err, io.EOF) {
				return <-answer // the manager ended the call: its answer says why
			}
			if err != nil {
				return err
			}
			if err := stream.CloseSend(); err != nil {
				return err
			}
			if err := <-answer; err != nil {
				return err
			}
			resp = &got
			return nil
		case err := <-answer:
			if err == nil {
				err = errors.New("the manager answered before the end of the standard input")
			}
			return err
		}
	}
	err := c.retryUnavailable(ctx, func() error {
		err := send()
		if touched.Load() && status.Code(err) == codes.Unavailable {
			return permanent{fmt.Errorf("the manager went away while it received the standard input (%s), which cannot be read again; nothing ran", status.Convert(err).Message())}
		}
		return err
	})
	if err != nil {
		return "", 0, unwrapPermanent(err)
	}
	return resp.GetUploadId(), resp.GetSize(), nil
}

// sendStdin sends head, then rest to its end; io.EOF: the manager ended
// the call first.
func sendStdin(stream pb.ProcessManagementService_UploadStdinClient, head []byte, rest io.Reader, touched *atomic.Bool) error {
	for data := head; len(data) > 0; data = data[min(devops.StdinChunk, len(data)):] {
		if err := stream.Send(&pb.UploadStdinRequest{Data: data[:min(devops.StdinChunk, len(data))]}); err != nil {
			return err
		}
	}
	touched.Store(true)
	for {
		// A new buffer each time: a sent message may be read later (by
		// gRPC's stats handlers), so it is not reused.
		buf := make([]byte, devops.StdinChunk)
		k, rerr := io.ReadFull(rest, buf)
		if k > 0 {
			if err := stream.Send(&pb.UploadStdinRequest{Data: buf[:k]}); err != nil {
				return err
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			return nil
		}
		if rerr != nil {
			return permanent{fmt.Errorf("read standard input: %w", rerr)}
		}
	}
}
