package executor

// A spec with an Image runs in a container of the local Docker engine,
// through its API (internal/dockerapi). It is the same Process as any other:
// launch starts it, its output goes through the same pipes and limit, the
// timeout, Terminate's signal and grace and the exit classification are the
// ones of a process; only the sandbox differs. So a container started by
// StartSupervised is watched by a shim like any process, outlives the
// worker and is adopted again by the next one.
//
// The container is created with the command as its argv (no shell), the
// spec's environment plus DEVOPS_PROCESS_ID (the image's own ENV, PATH
// included, stays: it is the image's, not the worker's), no TTY, the
// engine's init as PID 1 (so a signal reaches the command, and a command
// killed by a signal ends the container with 128+signal), the limits as
// HostConfig (Memory with no swap, NanoCPUs, PidsLimit), the label
// devops.process-id and the name devops-<id>. Nothing is pulled: these
// machines have no registry, the image must be on the worker. The container
// is removed once the process ended.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"

	"github.com/devops-platform/devops"
	"github.com/devops-platform/devops/internal/dockerapi"
)

// LabelProcessID is the label every container started for a process
// carries, with the process id as its value.
const LabelProcessID = "devops.process-id"

// Timeouts of single calls to the engine.
const (
	dockerPingTimeout = 3 * time.Second
	dockerCallTimeout = 30 * time.Second
)

// dockerEnv returns the variables that say how to reach the engine, as set
// in this process's environment, for a shim to reach the same engine as the
// worker.
func dockerEnv() []string {
	var env []string
	for _, k := range dockerapi.EnvVars {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// newDockerClient makes a client of the engine the environment names (the
// local socket by default), or returns an error when none answers a ping.
func newDockerClient(ctx context.Context) (*dockerapi.Client, error) {
	c, err := dockerapi.FromEnv()
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, dockerPingTimeout)
	defer cancel()
	if err := c.Ping(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("docker engine: %w", err)
	}
	return c, nil
}

// dockerClient returns the executor's client, making it on first use (in a
// shim, whose Executor is rebuilt from its config without one).
func (e *Executor) dockerClient(ctx context.Context) (*dockerapi.Client, error) {
	e.dockerMu.Lock()
	defer e.dockerMu.Unlock()
	if e.docker != nil {
		return e.docker, nil
	}
	c, err := newDockerClient(ctx)
	if err != nil {
		return nil, err
	}
	e.docker = c
	return c, nil
}

// checkImage is check's part for a spec with an Image: the engine must
// answer and hold the image.
func (e *Executor) checkImage(spec devops.Spec) error {
	e.dockerMu.Lock()
	c := e.docker
	e.dockerMu.Unlock()
	if c == nil {
		return fmt.Errorf("%w: image %q needs docker, and no Docker engine answered on this worker", devops.ErrInvalid, spec.Image)
	}
	ctx, cancel := context.WithTimeout(context.Background(), dockerCallTimeout)
	defer cancel()
	if err := c.ImageExists(ctx, spec.Image); err != nil {
		if dockerapi.IsNotFound(err) {
			return fmt.Errorf("%w: image %q is not on this worker (nothing is pulled: build or load it there)", devops.ErrInvalid, spec.Image)
		}
		return err
	}
	return nil
}

// containerName is the name of process id's container.
func containerName(id devops.ProcessID) string {
	return "devops-" + string(id)
}

// containerEnv is the environment a container gets: the spec's and
// DEVOPS_PROCESS_ID, on top of the image's own.
func containerEnv(specEnv map[string]string, id devops.ProcessID) []string {
	env := make([]string, 0, len(specEnv)+1)
	for k, v := range specEnv {
		if k != "DEVOPS_PROCESS_ID" {
			env = append(env, k+"="+v)
		}
	}
	return append(env, "DEVOPS_PROCESS_ID="+string(id))
}

// containerConfig builds what ContainerCreate needs for l.
func containerConfig(l launch) container.CreateRequest {
	spec := l.spec
	init := true
	hc := &container.HostConfig{Init: &init}
	lim := spec.Limits
	if lim.MemoryBytes > 0 {
		hc.Memory = lim.MemoryBytes
		hc.MemorySwap = lim.MemoryBytes // no swap: the limit is the limit
	}
	if lim.CPUs > 0 {
		hc.NanoCPUs = int64(lim.CPUs * 1e9)
	}
	if lim.Pids > 0 {
		pids := lim.Pids
		hc.PidsLimit = &pids
	}
	return container.CreateRequest{
		Config: &container.Config{
			Image:        spec.Image,
			Entrypoint:   spec.Argv[:1],
			Cmd:          spec.Argv[1:],
			Env:          containerEnv(spec.Env, l.id),
			WorkingDir:   spec.Dir,
			User:         spec.User,
			Hostname:     l.hostname,
			AttachStdout: true,
			AttachStderr: true,
			// With an input, the container's stdin is a pipe that closes
			// when the one attached to it lets go (startContainer).
			AttachStdin: l.stdin != "",
			OpenStdin:   l.stdin != "",
			StdinOnce:   l.stdin != "",
			Labels:      map[string]string{LabelProcessID: string(l.id)},
		},
		HostConfig: hc,
	}
}

// startContainer creates and starts l's container. It owns l.stdout and
// l.stderr: they are closed once the container's output ended (or at once
// on error), so the readers see EOF.
func (e *Executor) startContainer(ctx context.Context, l launch, log *slog.Logger) (sandbox, error) {
	c, err := e.dockerClient(ctx)
	if err != nil {
		l.stdout.Close()
		l.stderr.Close()
		return nil, fmt.Errorf("%w: %v", devops.ErrInvalid, err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dockerCallTimeout)
	defer cancel()
	sb := &containerSandbox{c: c, log: log, done: make(chan struct{})}
	id, err := c.ContainerCreate(ctx, containerName(l.id), containerConfig(l))
	if err != nil {
		l.stdout.Close()
		l.stderr.Close()
		if dockerapi.IsNotFound(err) {
			return nil, fmt.Errorf("%w: image %q is not on this worker: %v", devops.ErrInvalid, l.spec.Image, err)
		}
		if dockerapi.IsConflict(err) {
			return nil, fmt.Errorf("%w: container %s exists", devops.ErrAlreadyExists, containerName(l.id))
		}
		return nil, err
	}
	sb.id = id
	// Attached before the start, so no byte is missed.
	att, err := c.ContainerAttach(ctx, sb.id)
	if err != nil {
		l.stdout.Close()
		l.stderr.Close()
		sb.destroy()
		return nil, err
	}
	go func() {
		defer close(sb.done)
		defer l.stdout.Close()
		defer l.stderr.Close()
		defer att.Close()
		if _, err := stdcopy.StdCopy(l.stdout, l.stderr, att); err != nil && !errors.Is(err, io.EOF) {
			log.Warn("read container output", logKeyError, err)
		}
	}()
	var (
		stdin io.WriteCloser
		input *os.File
	)
	if l.stdin != "" {
		// Opened now: the shim removes the file once the container ended,
		// which may be before the copy below gets to it.
		if input, err = openStdin(l.stdin); err == nil {
			stdin, err = c.ContainerAttachStdin(ctx, sb.id)
		}
		if err != nil {
			if input != nil {
				input.Close()
			}
			att.Close()
			sb.destroy()
			return nil, err
		}
	}
	if err := c.ContainerStart(ctx, sb.id); err != nil {
		att.Close()
		if stdin != nil {
			stdin.Close()
			input.Close()
		}
		sb.destroy()
		// The container never ran: like a command that could not be
		// executed (its executable is missing from the image, say).
		return nil, fmt.Errorf("%w: %v", devops.ErrInvalid, err)
	}
	if stdin != nil {
		// Written as the container reads it; the engine drops the
		// connection once the container ended, whatever it read.
		go sendStdin(input, stdin, log)
	}
	info, err := c.ContainerInspect(ctx, sb.id)
	if err == nil && info.State != nil {
		sb.hostPid = info.State.Pid
	}
	log.Debug("container started", "container", sb.id, logKeyPid, sb.hostPid)
	return sb, nil
}

// containerSandbox is a process running as a container.
type containerSandbox struct {
	c       *dockerapi.Client
	id      string
	log     *slog.Logger
	hostPid int
	done    chan struct{} // closed once the attached output ended

	mu        sync.Mutex // protects the fields below
	signalled bool       // signal or kill was sent: 128+n is that signal
	oomKilled bool       // read by wait
}

func (s *containerSandbox) pid() int { return s.hostPid }

// wait blocks until the container stopped and reads how it ended.
func (s *containerSandbox) wait() (initResult, *syscall.Rusage) {
	for {
		_, err := s.c.ContainerWait(context.Background(), s.id)
		if err == nil {
			break
		}
		// A broken connection (the engine restarted): ask again, unless
		// the container is gone for good.
		if dockerapi.IsNotFound(err) {
			s.log.Warn("container vanished", logKeyError, err)
			return initResult{Code: -1, Signal: int(syscall.SIGKILL), Reason: "container removed behind our back"}, nil
		}
		s.log.Warn("wait for container", logKeyError, err)
		time.Sleep(time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), dockerCallTimeout)
	defer cancel()
	info, err := s.c.ContainerInspect(ctx, s.id)
	if err != nil || info.State == nil {
		return initResult{Code: -1, Reason: fmt.Sprintf("inspect container: %v", err)}, nil
	}
	st := info.State
	s.mu.Lock()
	defer s.mu.Unlock()
	s.oomKilled = st.OOMKilled
	return containerResult(st.ExitCode, st.OOMKilled, s.signalled), nil
}

// containerResult maps a container's exit code to how the command ended.
// The engine's init ends with 128+n when the command was killed by signal
// n, which a command may also exit with: it is read as a signal only when
// one was sent (Terminate, timeout, the memory limit).
func containerResult(code int, oomKilled, signalled bool) initResult {
	if code > 128 && code <= 128+64 && (signalled || oomKilled && code == 128+int(syscall.SIGKILL)) {
		return initResult{Signal: code - 128}
	}
	return initResult{Code: code}
}

// signal sends sig to the container's init, which passes it on.
func (s *containerSandbox) signal(sig syscall.Signal) {
	s.mu.Lock()
	s.signalled = true
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), dockerCallTimeout)
	defer cancel()
	if err := s.c.ContainerKill(ctx, s.id, int(sig)); err != nil && !dockerapi.IsConflict(err) && !dockerapi.IsNotFound(err) {
		s.log.Warn("signal container", logKeyError, err)
	}
}

// kill SIGKILLs the container and waits until it stopped and its output
// ended.
func (s *containerSandbox) kill() {
	s.signal(syscall.SIGKILL)
	ctx, cancel := context.WithTimeout(context.Background(), dockerCallTimeout)
	defer cancel()
	if _, err := s.c.ContainerWait(ctx, s.id); err != nil && !dockerapi.IsNotFound(err) {
		s.log.Warn("wait for killed container", logKeyError, err)
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		s.log.Warn("container output still open after the kill")
	}
}

// usage reports the OOM kill; CPU time and peak memory are not read from
// the engine (its cgroup is gone once the container stopped).
func (s *containerSandbox) usage(*syscall.Rusage) usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return usage{oomKilled: s.oomKilled}
}

// destroy removes the container.
func (s *containerSandbox) destroy() {
	ctx, cancel := context.WithTimeout(context.Background(), dockerCallTimeout)
	defer cancel()
	if err := s.c.ContainerRemove(ctx, s.id); err != nil && !dockerapi.IsNotFound(err) {
		s.log.Warn("remove container", "container", s.id, logKeyError, err)
	}
}

// sendStdin copies f to a container's attached stdin, and closes both:
// the container reads end of file.
func sendStdin(f *os.File, stdin io.WriteCloser, log *slog.Logger) {
	defer stdin.Close()
	defer f.Close()
	if _, err := io.Copy(stdin, f); err != nil {
		log.Debug("write the container's standard input", logKeyError, err)
	}
}
