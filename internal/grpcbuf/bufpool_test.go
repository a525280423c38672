package grpcbuf

import "testing"

func TestGetPut(t *testing.T) {
	p := New()
	for _, n := range []int{0, 1, 256, 257, 4 << 10, 300 << 10, 1 << 20, 3 << 20} {
		b := p.Get(n)
		if len(*b) != n {
			t.Errorf("Get(%d): len %d", n, len(*b))
		}
		if n <= 1<<20 && cap(*b) < n {
			t.Errorf("Get(%d): cap %d", n, cap(*b))
		}
		for i := range *b {
			(*b)[i] = 0xff
		}
		p.Put(b)
	}
	// A buffer put back is handed out again at its tier's full capacity.
	b := p.Get(100 << 10)
	if cap(*b) != 264<<10 {
		t.Fatalf("Get(100 KiB): cap %d, want the 264 KiB tier", cap(*b))
	}
	p.Put(b)
	c := p.Get(200 << 10)
	if len(*c) != 200<<10 || cap(*c) != 264<<10 {
		t.Errorf("Get(200 KiB) after a Put: len %d cap %d", len(*c), cap(*c))
	}
	// An output message, a 256 KiB chunk and its envelope, fits the tier.
	if d := p.Get(256<<10 + 64); cap(*d) != 264<<10 {
		t.Errorf("Get(256 KiB + 64): cap %d, want the 264 KiB tier", cap(*d))
	}
}
