package testcluster

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections to a target, and with Route to more
// targets, and can cut the network silently, as a partition does: while
// cut, bytes are swallowed in both directions on every route and nothing is
// closed, so each side only notices through its own timeouts. Heal closes
// the connections that lived through the cut and forwards again.
type Proxy struct {
	lis    net.Listener
	routes []net.Listener // Route's listeners; closed with lis

	mu     sync.Mutex // protects the fields below
	target string
	cut    bool
	conns  []net.Conn
	wg     sync.WaitGroup
}

// NewProxy listens on 127.0.0.1 and forwards to target until the test ends.
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("proxy listen: %v", err)
	}
	p := &Proxy{lis: lis, target: target}
	p.wg.Add(1)
	go p.accept(lis, func() string {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.target
	})
	tb.Cleanup(p.close)
	return p
}

// Route forwards one more address, which it returns, to target; Cut and
// Heal act on it too. A worker reaches its manager through a route of the
// proxy that the manager reaches it through: one partition cuts both ways.
func (p *Proxy) Route(tb testing.TB, target string) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("proxy listen: %v", err)
	}
	p.mu.Lock()
	p.routes = append(p.routes, lis)
	p.mu.Unlock()
	p.wg.Add(1)
	go p.accept(lis, func() string { return target })
	return lis.Addr().String()
}

// Addr is where to connect instead of the target.
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

// SetTarget changes where new connections go, as when the target restarted
// on another port.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
}

// Cut starts swallowing every byte.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
}

// Heal closes the connections that lived through the cut and forwards again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *Proxy) isCut() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut
}

func (p *Proxy) accept(lis net.Listener, target func() string) {
	defer p.wg.Done()
	for {
		in, err := lis.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", target())
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(out, in)
		go p.pipe(in, out)
	}
}

// pipe copies src to dst, dropping what it reads while the proxy is cut.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.isCut() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				src.Close()
			}
			return
		}
	}
}

func (p *Proxy) close() {
	p.lis.Close()
	p.mu.Lock()
	for _, l := range p.routes {
		l.Close()
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}
