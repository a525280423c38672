// Package grpcbuf holds how gRPC buffers messages on every connection of the
// manager, the workers and the client: a buffer pool, and the proto codec
// that marshals into it and unmarshals from it (grpc's own codec takes its
// buffers from the process-wide default pool, whatever the connection's).
//
// The pool differs from grpc's default one in one way: it does not zero a buffer
// it hands out. grpc fills every buffer it gets before it reads from it (a
// socket read, or a marshal), so zeroing only protects against a bug in grpc
// itself, and it is paid on every byte of output at each hop: 256 KiB
// chunks take 1 MiB buffers, cleared whole, a tenth of the manager's CPU
// while it relays output (memclr in a profile of 1 GiB followed to its end).
// grpc has such a pool but keeps it internal, hence this one.
package grpcbuf

import (
	"sync"

	"google.golang.org/grpc/mem"
)

// sizes are the buffer capacities pooled, grpc's default tiers: small
// messages, a page, an HTTP/2 frame, io.Copy's buffer, and 1 MiB for
// output chunks. Larger buffers are allocated each time.
var sizes = [...]int{256, 4 << 10, 16 << 10, 32 << 10, 1 << 20}

// Pool is a mem.BufferPool whose buffers are not zeroed.
type Pool struct {
	tiers [len(sizes)]sync.Pool
}

var _ mem.BufferPool = (*Pool)(nil)

// New returns an empty pool.
func New() *Pool { return &Pool{} }

// Get returns a buffer of length n, with whatever it last held.
func (p *Pool) Get(n int) *[]byte {
	for i, size := range sizes {
		if n > size {
			continue
		}
		if b, ok := p.tiers[i].Get().(*[]byte); ok {
			*b = (*b)[:n]
			return b
		}
		b := make([]byte, n, size)
		return &b
	}
	b := make([]byte, n)
	return &b
}

// Put returns a buffer from Get to the pool.
func (p *Pool) Put(b *[]byte) {
	for i, size := range sizes {
		if cap(*b) == size {
			p.tiers[i].Put(b)
			return
		}
	}
}
