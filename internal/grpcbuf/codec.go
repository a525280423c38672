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

// Marshal encodes v into one buffer of exactly its size.
func (c Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("marshal: %T is not a proto message", v)
	}
	size := proto.Size(m)
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := proto.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := c.pool.Get(size)
	// The size was just computed and v does not change meanwhile.
	b, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend((*buf)[:0], m)
	if err != nil {
		c.pool.Put(buf)
		return nil, err
	}
	*buf = b
	return mem.BufferSlice{mem.NewBuffer(buf, c.pool)}, nil
}

// Unmarshal decodes data into v. proto.Unmarshal copies what it keeps, so
// data may be freed once it returns.
func (c Codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("unmarshal: %T is not a proto message", v)
	}
	if len(data) == 1 {
		return proto.Unmarshal(data[0].ReadOnlyData(), m)
	}
	buf := data.MaterializeToBuffer(c.pool)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}
