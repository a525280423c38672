package client

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/devops-platform/devops/api/devops/v1"
)

// stdinChunk is how much of a standard input goes in one message.
const stdinChunk = 1 << 20

// UploadStdin sends the manager a standard input too large for a request
// (over devops.MaxStdin): head, then rest to its end. It answers the
// upload's id, for Spec.StdinUpload, and its size. While the manager is
// unreachable it tries again as other calls do, until it has read from
// rest: a pipe is read once.
func (c *Client) UploadStdin(ctx context.Context, head []byte, rest io.Reader) (string, int64, error) {
	var resp *pb.UploadStdinResponse
	touched := false
	send := func() error {
		// Cancelled, not closed, when the read fails: a close would
		// have the manager keep what it got as a whole upload.
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := c.api.UploadStdin(sctx)
		if err != nil {
			return err
		}
		for data := head; len(data) > 0; data = data[min(stdinChunk, len(data)):] {
			if err := stream.Send(&pb.UploadStdinRequest{Data: data[:min(stdinChunk, len(data))]}); err != nil {
				return closeUpload(stream, err)
			}
		}
		touched = true
		for {
			// A new buffer each time: a sent message may be read later
			// (by gRPC's stats handlers), so it is not reused.
			buf := make([]byte, stdinChunk)
			k, rerr := io.ReadFull(rest, buf)
			if k > 0 {
				if err := stream.Send(&pb.UploadStdinRequest{Data: buf[:k]}); err != nil {
					return closeUpload(stream, err)
				}
			}
			if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
				break
			}
			if rerr != nil {
				cancel()
				return permanent{fmt.Errorf("read standard input: %w", rerr)}
			}
		}
		resp, err = stream.CloseAndRecv()
		return err
	}
	err := c.retryUnavailable(ctx, func() error {
		err := send()
		if touched && status.Code(err) == codes.Unavailable {
			return permanent{fmt.Errorf("the manager went away while it received the standard input (%s), which cannot be read again; nothing ran", status.Convert(err).Message())}
		}
		return err
	})
	if err != nil {
		return "", 0, unwrapPermanent(err)
	}
	return resp.GetUploadId(), resp.GetSize(), nil
}

// closeUpload returns why a send failed: io.EOF from Send means the
// manager ended the call, and CloseAndRecv tells why.
func closeUpload(stream pb.ProcessManagementService_UploadStdinClient, err error) error {
	if errors.Is(err, io.EOF) {
		_, err = stream.CloseAndRecv()
	}
	return err
}
