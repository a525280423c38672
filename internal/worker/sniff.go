package worker

import (
	"bufio"
	"context"
	"net"

	"google.golang.org/grpc/credentials"
)

// sniffCreds serves TLS to clients that start a TLS handshake and plaintext
// to the others, on one port. Plaintext callers hold no certificate, so the
// interceptor lets them reach only the health and reflection services: a
// container probe or a load balancer can check the worker without
// credentials, and nothing else is reachable without the manager's.
type sniffCreds struct {
	credentials.TransportCredentials // the TLS credentials
}

// plainInfo is the AuthInfo of a plaintext connection.
type plainInfo struct{ credentials.CommonAuthInfo }

func (plainInfo) AuthType() string { return "insecure" }

func (s sniffCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	br := bufio.NewReaderSize(conn, 1)
	first, err := br.Peek(1)
	if err != nil {
		return nil, nil, err
	}
	pc := &peekedConn{Conn: conn, r: br}
	if first[0] == 0x16 { // a TLS handshake record
		return s.TransportCredentials.ServerHandshake(pc)
	}
	return pc, plainInfo{credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
}

func (s sniffCreds) Clone() credentials.TransportCredentials {
	return sniffCreds{s.TransportCredentials.Clone()}
}

func (s sniffCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return s.TransportCredentials.ClientHandshake(ctx, authority, conn)
}

// peekedConn reads first what was peeked.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
