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
	if cap(*b) != 1<<20 {
		t.Fatalf("Get(100 KiB): cap %d, want the 1 MiB tier", cap(*b))
	}
	p.Put(b)
	c := p.Get(200 << 10)
	if len(*c) != 200<<10 || cap(*c) != 1<<20 {
		t.Errorf("Get(200 KiB) after a Put: len %d cap %d", len(*c), cap(*c))
	}
}
