package grpcbuf

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Codec is the proto codec, with its buffers from a Pool. It is given to
// grpc with ForceServerCodecV2 and ForceCodecV2; on the wire it is the
// standard "proto" content subtype.
type Codec struct {
	pool mem.BufferPool
}

var _ encoding.CodecV2 = Codec{}

// NewCodec returns a codec taking its buffers from pool.
func NewCodec(pool mem.BufferPool) Codec { return Codec{pool: pool} }

// Name is the content subtype, the same as grpc's own proto codec.
func (Codec) Name() string { return "proto" }

// vtMessage is a message with marshalling generated for it
// (protoc-gen-go-vtproto, api/): no reflection, so a process does not build
// reflection tables for each message type it uses first (9% of the CPU of
// `devops run -- true` before this path).
type vtMessage interface {
	SizeVT() int
	MarshalToSizedBufferVT([]byte) (int, error)
	UnmarshalVT([]byte) error
	Reset()
}

// vtMax is the largest message coded by the generated code. Output chunks
// above it go through proto's own: 1 GiB followed ran 5-10% slower through
// the generated code (make bench QUICK=1, five interleaved pairs).
const vtMax = 32 << 10

// Marshal encodes v into one buffer of exactly its size.
func (c Codec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(vtMessage); ok {
		if size := m.SizeVT(); size <= vtMax {
			return c.encode(size, func(b []byte) error {
				_, err := m.MarshalToSizedBufferVT(b)
				return err
			})
		}
	}
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("marshal: %T is not a proto message", v)
	}
	return c.encode(proto.Size(m), func(b []byte) error {
		// The size was just computed and v does not change meanwhile, so
		// the message fills b exactly, in place.
		_, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b[:0], m)
		return err
	})
}

// encode has fill write a message of size bytes into a buffer of that
// length: one of its own when small, else one from the pool.
func (c Codec) encode(size int, fill func([]byte) error) (mem.BufferSlice, error) {
	if mem.IsBelowBufferPoolingThreshold(size) {
		b := make([]byte, size)
		if err := fill(b); err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := c.pool.Get(size)
	if err := fill(*buf); err != nil {
		c.pool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, c.pool)}, nil
}

// Unmarshal decodes data into v. proto.Unmarshal copies what it keeps, so
// data may be freed once it returns.
func (c Codec) Unmarshal(data mem.BufferSlice, v any) error {
	var b []byte
	if len(data) == 1 {
		b = data[0].ReadOnlyData()
	} else {
		buf := data.MaterializeToBuffer(c.pool)
		defer buf.Free()
		b = buf.ReadOnlyData()
	}
	if m, ok := v.(vtMessage); ok && len(b) <= vtMax {
		// UnmarshalVT merges into what m holds; a caller may hand the
		// same message again (the manager's status stream does).
		if p, ok := v.(interface{ ResetVT() }); ok {
			// A message generated with vtproto's pool (buf.gen.yaml)
			// returns its parts to their pools, and UnmarshalVT takes
			// them back: a message decoded into again and again (each
			// worker's status reports) allocates nothing for them.
			p.ResetVT()
		} else {
			m.Reset() // the generated Reset builds no reflection tables
		}
		return m.UnmarshalVT(b)
	}
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("unmarshal: %T is not a proto message", v)
	}
	return proto.Unmarshal(b, m)
}
