package dockerapi

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// fakeEngine serves the calls the client makes, the way the engine
// answers them, on a loopback port DOCKER_HOST points to.
func fakeEngine(t *testing.T, version string) (*httptest.Server, *[]string) {
	t.Helper()
	var calls []string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_ping", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Api-Version", version)
		io.WriteString(w, "OK")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		calls = append(calls, r.Method+" "+r.URL.RequestURI())
		switch {
		case strings.HasSuffix(r.URL.Path, "/images/missing:1/json"):
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"message":"No such image: missing:1"}`)
		case strings.HasSuffix(r.URL.Path, "/containers/create"):
			var req container.CreateRequest
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Image != "img" || req.HostConfig == nil || !*req.HostConfig.Init {
				w.WriteHeader(http.StatusBadRequest)
				io.WriteString(w, `{"message":"bad request"}`)
				return
			}
			io.WriteString(w, `{"Id":"c1","Warnings":[]}`)
		case strings.HasSuffix(r.URL.Path, "/containers/c1/attach"):
			if r.Header.Get("Upgrade") != "tcp" {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			conn, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			defer conn.Close()
			buf.WriteString("HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
			buf.Flush()
			time.Sleep(50 * time.Millisecond) // the caller's ctx ends before the stream does
			buf.WriteString("stream data")
			buf.Flush()
		case strings.HasSuffix(r.URL.Path, "/containers/gone/kill"):
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, `{"message":"container gone is not running"}`)
		case strings.HasSuffix(r.URL.Path, "/containers/c1/wait"):
			io.WriteString(w, `{"StatusCode":3}`)
		default:
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, "plain failure\n")
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Setenv("DOCKER_HOST", "tcp://"+srv.Listener.Addr().String())
	t.Setenv("DOCKER_API_VERSION", "")
	t.Setenv("DOCKER_CERT_PATH", "")
	t.Setenv("DOCKER_TLS_VERIFY", "")
	return srv, &calls
}

func TestCallsAndErrors(t *testing.T) {
	_, calls := fakeEngine(t, "1.41")
	c, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Version() != "1.41" {
		t.Errorf("version after ping = %s, want the engine's older 1.41", c.Version())
	}

	if err := c.ImageExists(ctx, "missing:1"); !IsNotFound(err) || !strings.Contains(err.Error(), "No such image: missing:1") {
		t.Errorf("missing image: %v, want not found with the engine's message", err)
	}
	if err := c.ImageExists(ctx, "odd?name#1"); err == nil {
		t.Error("an image the engine does not hold was found")
	}
	init := true
	id, err := c.ContainerCreate(ctx, "devops-p1", container.CreateRequest{Config: &container.Config{Image: "img"}, HostConfig: &container.HostConfig{Init: &init}})
	if err != nil || id != "c1" {
		t.Fatalf("create = %q, %v", id, err)
	}
	if err := c.ContainerKill(ctx, "gone", 15); !IsConflict(err) || IsNotFound(err) {
		t.Errorf("kill of a stopped container: %v, want a conflict", err)
	}
	if res, err := c.ContainerWait(ctx, "c1"); err != nil || res.StatusCode != 3 {
		t.Errorf("wait = %+v, %v", res, err)
	}
	if err := c.ContainerStart(ctx, "other"); err == nil || !strings.Contains(err.Error(), "plain failure (HTTP 500)") {
		t.Errorf("start with a plain-text failure: %v", err)
	}

	want := []string{
		"GET /v1.41/images/missing:1/json",
		"GET /v1.41/images/odd%3Fname%231/json",
		"POST /v1.41/containers/create?name=devops-p1",
		"POST /v1.41/containers/gone/kill?signal=15",
		"POST /v1.41/containers/c1/wait?condition=not-running",
		"POST /v1.41/containers/other/start",
	}
	if strings.Join(*calls, "\n") != strings.Join(want, "\n") {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(*calls, "\n"), strings.Join(want, "\n"))
	}
}

// The attached stream outlives the context of the call that opened it.
func TestAttachOutlivesCallContext(t *testing.T) {
	fakeEngine(t, "1.56")
	c, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := c.ContainerAttach(ctx, "c1")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b, err := io.ReadAll(bufio.NewReader(s))
	if err != nil || string(b) != "stream data" {
		t.Errorf("stream = %q, %v", b, err)
	}
}

func TestEnvironment(t *testing.T) {
	_, _ = fakeEngine(t, "1.99")
	t.Setenv("DOCKER_API_VERSION", "1.40")
	c, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c.Version() != "1.40" {
		t.Errorf("version = %s, want the pinned 1.40", c.Version())
	}

	t.Setenv("DOCKER_API_VERSION", "")
	c, err = FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c.Version() != maxVersion {
		t.Errorf("version with a newer engine = %s, want ours, %s", c.Version(), maxVersion)
	}

	for _, host := range []string{"ssh://me@host", "/var/run/docker.sock", "unix://"} {
		t.Setenv("DOCKER_HOST", host)
		if _, err := FromEnv(); err == nil {
			t.Errorf("DOCKER_HOST=%s accepted", host)
		}
	}
	t.Setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
	t.Setenv("DOCKER_TLS_VERIFY", "1")
	t.Setenv("DOCKER_CERT_PATH", t.TempDir())
	if _, err := FromEnv(); err == nil {
		t.Error("DOCKER_TLS_VERIFY without a CA accepted")
	}
}

// Against the machine's engine, when there is one: the version settled on
// is the one the moby client settles on.
func TestVersionAsMobyClient(t *testing.T) {
	c, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx); err != nil {
		t.Skipf("needs a Docker engine: %v", err)
	}
	mc, err := client.New(client.FromEnv)
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	if _, err := mc.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		t.Fatal(err)
	}
	if c.Version() != mc.ClientVersion() {
		t.Errorf("version = %s, the moby client's %s", c.Version(), mc.ClientVersion())
	}
}
