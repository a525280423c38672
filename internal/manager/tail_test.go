package manager

import (
	"bytes"
	"testing"

	"github.com/devops-platform/devops"
)

func TestTailKeepsAWindowAndTrims(t *testing.T) {
	tl := newTail(100, false)
	chunk := bytes.Repeat([]byte("x"), 1<<20)
	for i := range 6 {
		tl.append(devops.Chunk{Offset: 100 + int64(i)<<20, Stream: devops.Stdout, Data: chunk})
	}
	if _, _, behind, _ := tl.read(100); !behind {
		t.Errorf("read(100) after 6 MiB: not behind, want the oldest bytes to have left the window")
	}
	from := int64(100 + 5<<20 + 10)
	chunks, closed, behind, _ := tl.read(from)
	if behind || closed || len(chunks) != 1 || chunks[0].Offset != from || len(chunks[0].Data) != 1<<20-10 {
		t.Fatalf("read(%d) = %d chunks, closed %v, behind %v", from, len(chunks), closed, behind)
	}
	_, _, _, changed := tl.read(tl.end)
	tl.close()
	select {
	case <-changed:
	default:
		t.Fatal("close did not wake readers")
	}
	if chunks, closed, _, _ := tl.read(tl.end); len(chunks) != 0 || !closed {
		t.Errorf("read at the end of a closed tail = %d chunks, closed %v", len(chunks), closed)
	}
}

func TestTailFreezes(t *testing.T) {
	tl := newTail(0, false)
	tl.append(devops.Chunk{Offset: 0, Stream: devops.Stdout, Data: []byte("kept")})
	tl.freeze()
	tl.append(devops.Chunk{Offset: 4, Stream: devops.Stdout, Data: []byte("dropped")})
	if chunks, _, _, _ := tl.read(0); len(chunks) != 1 || string(chunks[0].Data) != "kept" {
		t.Errorf("read after freeze = %+v, want only what came before", chunks)
	}
}

// TestTailReleasesAClosedTail: a closed tail still serves its bytes, and
// once released holds none; a follower behind is sent to the store.
func TestTailReleasesAClosedTail(t *testing.T) {
	tl := newTail(0, false)
	tl.append(devops.Chunk{Offset: 0, Stream: devops.Stdout, Data: []byte("hello")})
	tl.close()
	if chunks, closed, behind, _ := tl.read(0); len(chunks) != 1 || !closed || behind {
		t.Fatalf("read(0) of a closed tail = %d chunks, closed %v, behind %v; want its chunk", len(chunks), closed, behind)
	}
	tl.release()
	if tl.size != 0 || len(tl.chunks) != 0 {
		t.Errorf("released tail holds %d bytes in %d chunks", tl.size, len(tl.chunks))
	}
	if _, _, behind, _ := tl.read(0); !behind {
		t.Error("read(0) of a released tail: not behind, want the store")
	}
	if chunks, closed, behind, _ := tl.read(5); len(chunks) != 0 || !closed || behind {
		t.Errorf("read at the end of a released tail = %d chunks, closed %v, behind %v", len(chunks), closed, behind)
	}
}
