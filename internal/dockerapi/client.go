// Package dockerapi is a small client of the Docker Engine's HTTP API: the
// calls the executor makes to run a process as a container (ping, image
// inspect, container create, attach, start, inspect, wait, kill, remove).
//
// Why not the moby client (github.com/moby/moby/client), which our
// conventions prefer: every devops process pays at its start for each
// package the binary links, and the binary starts for every command (its
// shim and its init) and for every CLI call. The moby client's package
// initialisers (image-reference and digest regular expressions,
// OpenTelemetry) cost ~7 ms of CPU at each of those starts, a quarter of
// the start (perf stat -r 40 `devops --help`: 31.3 → 24.3 ms of CPU, 1,147
// → 937 page faults). The request and response types and the output
// stream's format stay moby's (github.com/moby/moby/api); only the HTTP
// transport is written here, and the tests check what it does with the moby
// client.
package dockerapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
)

// DefaultHost is the engine's socket when DOCKER_HOST is not set.
const DefaultHost = "unix:///var/run/docker.sock"

// maxVersion is the newest API version this client speaks: the one of the
// moby/api types it encodes (the moby client of the same release says the
// same). Ping lowers it to what the engine speaks.
const maxVersion = "1.56"

// EnvVars are the environment variables FromEnv reads, so a process that
// starts another can pass the same engine on.
var EnvVars = []string{"DOCKER_HOST", "DOCKER_API_VERSION", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY"}

// Client calls one engine. Its methods are safe for concurrent use once
// Ping returned.
type Client struct {
	http    *http.Client
	base    url.URL // scheme and host of every request's URL
	version string  // API version, pinned by DOCKER_API_VERSION or Ping
	pinned  bool    // DOCKER_API_VERSION set: Ping does not negotiate
}

// Error is the engine's answer to a call that failed.
type Error struct {
	Status  int    // the HTTP status
	Message string // the engine's message
}

func (e *Error) Error() string {
	return fmt.Sprintf("docker engine: %s (HTTP %d)", e.Message, e.Status)
}

// IsNotFound reports whether err is the engine saying that the container
// or image does not exist.
func IsNotFound(err error) bool { return hasStatus(err, http.StatusNotFound) }

// IsConflict reports whether err is the engine refusing a call for the
// container's state (a name in use, a kill of a stopped container).
func IsConflict(err error) bool { return hasStatus(err, http.StatusConflict) }

func hasStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == status
}

// FromEnv makes a client of the engine DOCKER_HOST names (DefaultHost when
// unset), with TLS as DOCKER_TLS_VERIFY and DOCKER_CERT_PATH say, the way
// the docker CLI reads them. It does not connect: Ping does.
func FromEnv() (*Client, error) {
	host := os.Getenv("DOCKER_HOST")
	if host == "" {
		host = DefaultHost
	}
	scheme, addr, ok := strings.Cut(host, "://")
	if !ok || addr == "" {
		return nil, fmt.Errorf("parse DOCKER_HOST %q: want unix:///path or tcp://host:port", host)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second}
	c := &Client{http: &http.Client{Transport: tr}, version: maxVersion}
	switch scheme {
	case "unix":
		var d net.Dialer
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", addr)
		}
		c.base = url.URL{Scheme: "http", Host: "docker"} // any host: the dialer ignores it
	case "tcp":
		u, err := url.Parse("tcp://" + addr)
		if err != nil {
			return nil, fmt.Errorf("parse DOCKER_HOST %q: %w", host, err)
		}
		c.base = url.URL{Scheme: "http", Host: u.Host}
		if cfg, err := tlsFromEnv(); err != nil {
			return nil, err
		} else if cfg != nil {
			tr.TLSClientConfig = cfg
			c.base.Scheme = "https"
		}
	default:
		return nil, fmt.Errorf("DOCKER_HOST %q: only unix:// and tcp:// engines are supported", host)
	}
	if v := os.Getenv("DOCKER_API_VERSION"); v != "" {
		c.version, c.pinned = strings.TrimPrefix(v, "v"), true
	}
	return c, nil
}

// tlsFromEnv returns the TLS configuration DOCKER_CERT_PATH and
// DOCKER_TLS_VERIFY ask for, or nil for none. Like the docker CLI, the
// engine's certificate is verified only when DOCKER_TLS_VERIFY is set.
func tlsFromEnv() (*tls.Config, error) {
	dir, verify := os.Getenv("DOCKER_CERT_PATH"), os.Getenv("DOCKER_TLS_VERIFY") != ""
	if dir == "" && !verify {
		return nil, nil
	}
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, fmt.Errorf("docker TLS: find the certificates: %w", err)
		}
		dir = filepath.Join(home, ".docker")
	}
	// Not verifying without DOCKER_TLS_VERIFY is the docker CLI's rule: the
	// environment opts in, and the same variables mean the same here.
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: !verify}
	if ca, err := os.ReadFile(filepath.Join(dir, "ca.pem")); err == nil {
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("docker TLS: no certificate in %s", filepath.Join(dir, "ca.pem"))
		}
	} else if verify {
		return nil, fmt.Errorf("docker TLS: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("docker TLS: client certificate: %w", err)
	}
	if err == nil {
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Close drops the client's idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Ping checks that the engine answers and, unless DOCKER_API_VERSION pins
// one, settles on the older of its API version and this client's.
func (c *Client) Ping(ctx context.Context) error {
	u := c.base
	u.Path = "/_ping"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	defer resp.Body.Close()
	if err := errorOf(resp); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	if v := resp.Header.Get("Api-Version"); v != "" && !c.pinned && olderVersion(v, c.version) {
		c.version = v
	}
	return nil
}

// Version is the API version the client speaks.
func (c *Client) Version() string { return c.version }

// olderVersion reports whether API version a ("1.41") is older than b.
func olderVersion(a, b string) bool {
	am, an, _ := strings.Cut(a, ".")
	bm, bn, _ := strings.Cut(b, ".")
	x, _ := strconv.Atoi(am)
	y, _ := strconv.Atoi(bm)
	if x != y {
		return x < y
	}
	x, _ = strconv.Atoi(an)
	y, _ = strconv.Atoi(bn)
	return x < y
}

// ImageExists returns nil when the engine holds image, an error that
// IsNotFound recognises when it does not.
func (c *Client) ImageExists(ctx context.Context, image string) error {
	if err := c.call(ctx, http.MethodGet, "/images/"+image+"/json", nil, nil, nil); err != nil {
		return fmt.Errorf("inspect image %s: %w", image, err)
	}
	return nil
}

// ContainerCreate creates a container called name and returns its id.
func (c *Client) ContainerCreate(ctx context.Context, name string, req container.CreateRequest) (string, error) {
	var created container.CreateResponse
	if err := c.call(ctx, http.MethodPost, "/containers/create", url.Values{"name": {name}}, req, &created); err != nil {
		return "", fmt.Errorf("create container %s: %w", name, err)
	}
	return created.ID, nil
}

// ContainerAttach attaches to the container's stdout and stderr and
// returns their stream, in the engine's multiplexed format (read it with
// stdcopy), until the container ends. Attach before the start, so no byte
// is missed. ctx bounds the call only, not the stream.
func (c *Client) ContainerAttach(ctx context.Context, id string) (io.ReadCloser, error) {
	return c.attach(ctx, id, url.Values{"stream": {"1"}, "stdout": {"1"}, "stderr": {"1"}})
}

// ContainerAttachStdin attaches to the standard input of a container made
// with OpenStdin and StdinOnce: what is written goes to it, and Close
// closes it, so the container reads end of file.
func (c *Client) ContainerAttachStdin(ctx context.Context, id string) (io.WriteCloser, error) {
	return c.attach(ctx, id, url.Values{"stream": {"1"}, "stdin": {"1"}})
}

func (c *Client) attach(ctx context.Context, id string, q url.Values) (io.ReadWriteCloser, error) {
	req, err := c.request(ctx, http.MethodPost, "/containers/"+id+"/attach", q, nil)
	if err != nil {
		return nil, fmt.Errorf("attach container %s: %w", id, err)
	}
	// The engine answers 101 and hands the connection over to the stream;
	// net/http gives that connection as the body, no longer bound to ctx
	// (TestAttachOutlivesCallContext).
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "tcp")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("attach container %s: %w", id, err)
	}
	if err := errorOf(resp); err != nil {
		resp.Body.Close()
		return nil, fmt.Errorf("attach container %s: %w", id, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		resp.Body.Close()
		return nil, fmt.Errorf("attach container %s: the engine answered %s, not a stream", id, resp.Status)
	}
	// net/http's body of a 101 is the connection, both ways.
	rw, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return nil, fmt.Errorf("attach container %s: the stream cannot be written", id)
	}
	return rw, nil
}

// ContainerStart starts a created container.
func (c *Client) ContainerStart(ctx context.Context, id string) error {
	if err := c.call(ctx, http.MethodPost, "/containers/"+id+"/start", nil, nil, nil); err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	return nil
}

// ContainerInspect returns what the engine knows of the container.
func (c *Client) ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error) {
	var info container.InspectResponse
	if err := c.call(ctx, http.MethodGet, "/containers/"+id+"/json", nil, nil, &info); err != nil {
		return info, fmt.Errorf("inspect container %s: %w", id, err)
	}
	return info, nil
}

// ContainerWait blocks until the container is not running (at once for one
// that never started) and returns its exit code.
func (c *Client) ContainerWait(ctx context.Context, id string) (container.WaitResponse, error) {
	var res container.WaitResponse
	q := url.Values{"condition": {string(container.WaitConditionNotRunning)}}
	if err := c.call(ctx, http.MethodPost, "/containers/"+id+"/wait", q, nil, &res); err != nil {
		return res, fmt.Errorf("wait for container %s: %w", id, err)
	}
	return res, nil
}

// ContainerKill sends signal number sig to the container's PID 1.
func (c *Client) ContainerKill(ctx context.Context, id string, sig int) error {
	if err := c.call(ctx, http.MethodPost, "/containers/"+id+"/kill", url.Values{"signal": {strconv.Itoa(sig)}}, nil, nil); err != nil {
		return fmt.Errorf("signal container %s: %w", id, err)
	}
	return nil
}

// ContainerRemove removes the container, killing it if it runs, with its
// anonymous volumes.
func (c *Client) ContainerRemove(ctx context.Context, id string) error {
	if err := c.call(ctx, http.MethodDelete, "/containers/"+id, url.Values{"force": {"1"}, "v": {"1"}}, nil, nil); err != nil {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	return nil
}

// request builds a call of the API at the client's version, with body
// encoded as JSON when not nil.
func (c *Client) request(ctx context.Context, method, path string, q url.Values, body any) (*http.Request, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		r = bytes.NewReader(b)
	}
	// Built from its parts, so a name with '?' or '#' (an image's, say)
	// stays in the path.
	u := c.base
	u.Path, u.RawQuery = "/v"+c.version+path, q.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// call sends a request and reads the engine's successful answer into out
// (JSON; nil: nothing to read), or returns its error.
func (c *Client) call(ctx context.Context, method, path string, q url.Values, body, out any) error {
	req, err := c.request(ctx, method, path, q, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	// Read to the end whatever happens, so the connection can be used again.
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}()
	if err := errorOf(resp); err != nil {
		return err
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
	}
	return nil
}

// errorOf returns the engine's error when resp is one (status 400 and up).
func errorOf(resp *http.Response) error {
	if resp.StatusCode < http.StatusBadRequest {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var m struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &m) != nil || m.Message == "" {
		m.Message = strings.TrimSpace(string(b))
	}
	return &Error{Status: resp.StatusCode, Message: m.Message}
}
