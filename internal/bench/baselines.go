//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// sshPort is where the bench's own sshd listens, on every alias it needs.
const sshPort = 2222

// installMissing installs the Debian packages the baselines need when their
// programs are missing. It returns why a package could not be installed.
func installMissing(ctx context.Context, allow bool, logf func(string, ...any)) map[string]string {
	want := map[string]string{"openssh-server": "/usr/sbin/sshd", "openssh-client": "ssh", "pdsh": "pdsh", "ansible": "ansible"}
	var missing []string
	for pkg, prog := range want {
		if _, err := exec.LookPath(prog); err != nil {
			missing = append(missing, pkg)
		}
	}
	failed := map[string]string{}
	if len(missing) == 0 {
		return failed
	}
	if !allow {
		for _, p := range missing {
			failed[p] = "not installed (QUICK mode does not install; run `make bench` once, or apt-get install " + p + ")"
		}
		return failed
	}
	logf("installing %s with apt-get", strings.Join(missing, " "))
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	run := func(name string, args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = env
		return cmd.CombinedOutput()
	}
	if out, err := run("apt-get", "update"); err != nil {
		logf("apt-get update: %v: %s", err, lastLine(out))
	}
	for _, p := range missing {
		out, err := run("apt-get", "install", "-y", "--no-install-recommends", p)
		if err != nil && strings.Contains(string(out), "dpkg --configure -a") {
			// An install stopped half way (a bench interrupted while it
			// installed, say) leaves dpkg refusing every other until its
			// packages are configured: do as apt-get asks, once, and retry.
			logf("apt-get install %s: %s; running dpkg --configure -a", p, lastLine(out))
			if cout, cerr := run("dpkg", "--configure", "-a"); cerr != nil {
				logf("dpkg --configure -a: %v: %s", cerr, lastLine(cout))
			}
			out, err = run("apt-get", "install", "-y", "--no-install-recommends", p)
		}
		if err != nil {
			failed[p] = fmt.Sprintf("apt-get install %s: %v: %s", p, err, lastLine(out))
		}
	}
	return failed
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// sshd is the bench's own sshd: loopback only, key auth only, its config
// and keys in a temporary directory.
type sshd struct {
	dir     string
	config  string   // ssh client config: port, user, key, no host key checks
	procs   []*child // one per maxListen addresses: sshd listens on at most 16
	hosts   []string
	version string
}

// startSSHD generates a host key and a client key and starts sshd -D on
// port sshPort of each host.
func startSSHD(ctx context.Context, dir string, hosts []string) (*sshd, error) {
	if _, err := exec.LookPath("/usr/sbin/sshd"); err != nil {
		return nil, fmt.Errorf("sshd not installed: %w", err)
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		return nil, fmt.Errorf("ssh not installed: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil { // privilege separation dir
		return nil, err
	}
	s := &sshd{dir: dir, hosts: hosts}
	for _, k := range []string{"host_key", "client_key"} {
		os.Remove(filepath.Join(dir, k))
		if out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "client_key.pub"))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		return nil, err
	}
	// The sessions' HOME is an empty directory of the bench's: a login
	// runs the user's shell, and bash reads ~/.bashrc for a command from
	// sshd. Root's on a machine of ours ran pyenv's init, half a second a
	// session (a minute while a killed session's lock stayed): the
	// baselines would measure that machine's dotfiles, not ssh.
	if err := os.MkdirAll(filepath.Join(dir, "home"), 0o700); err != nil {
		return nil, err
	}
	common := fmt.Sprintf(`HostKey %[1]s/host_key
AuthorizedKeysFile %[1]s/authorized_keys
SetEnv HOME=%[1]s/home
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
UseDNS no
MaxStartups 200:30:400
MaxSessions 200
LogLevel ERROR
Subsystem sftp internal-sftp
`, dir)
	const maxListen = 16 // sshd's MAX_LISTEN_SOCKS
	var configs []string
	for i := 0; i < len(hosts); i += maxListen {
		var cfg strings.Builder
		for _, h := range hosts[i:min(i+maxListen, len(hosts))] {
			fmt.Fprintf(&cfg, "ListenAddress %s:%d\n", h, sshPort)
		}
		fmt.Fprintf(&cfg, "PidFile %s/sshd-%d.pid\n", dir, len(configs))
		cfg.WriteString(common)
		path := filepath.Join(dir, fmt.Sprintf("sshd_config-%d", len(configs)))
		if err := os.WriteFile(path, []byte(cfg.String()), 0o600); err != nil {
			return nil, err
		}
		configs = append(configs, path)
	}
	s.config = filepath.Join(dir, "ssh_config")
	client := fmt.Sprintf(`Host *
  Port %d
  User root
  IdentityFile %s/client_key
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  GlobalKnownHostsFile /dev/null
  BatchMode yes
  LogLevel ERROR
`, sshPort, dir)
	if err := os.WriteFile(s.config, []byte(client), 0o600); err != nil {
		return nil, err
	}
	for i, cfg := range configs {
		p, err := startChild("sshd", filepath.Join(dir, fmt.Sprintf("sshd-%d.log", i)), "/usr/sbin/sshd", "-D", "-e", "-f", cfg)
		if err != nil {
			s.stop()
			return nil, err
		}
		s.procs = append(s.procs, p)
	}
	// Wait until it accepts on every address.
	deadline := time.Now().Add(10 * time.Second)
	for _, h := range hosts {
		for {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", h, sshPort), time.Second)
			if err == nil {
				c.Close()
				break
			}
			for i, p := range s.procs {
				select {
				case <-p.done:
					log, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("sshd-%d.log", i)))
					s.stop()
					return nil, fmt.Errorf("sshd exited: %v: %s", p.err, lastLine(log))
				default:
				}
			}
			if time.Now().After(deadline) {
				s.stop()
				return nil, fmt.Errorf("sshd not listening on %s: %w", h, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	out, _ := exec.Command("ssh", "-V").CombinedOutput()
	s.version = strings.TrimSpace(string(out))
	// One login proves the keys work, and that a session's HOME is ours,
	// before anything is measured.
	out, err = s.command(ctx, false, hosts[0], "echo $HOME").CombinedOutput()
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("ssh login: %v: %s", err, lastLine(out))
	}
	if home := strings.TrimSpace(string(out)); home != filepath.Join(dir, "home") {
		s.stop()
		return nil, fmt.Errorf("ssh sessions get HOME %q, not the bench's: they would run the user's dotfiles", home)
	}
	return s, nil
}

// command is `ssh HOST ARGS...` with the bench's client config; with mux it
// shares one connection per host (ControlMaster).
func (s *sshd) command(ctx context.Context, mux bool, host string, args ...string) *exec.Cmd {
	argv := []string{"-F", s.config}
	if mux {
		argv = append(argv, "-o", "ControlMaster=auto", "-o", "ControlPath="+filepath.Join(s.dir, "cm-%h"), "-o", "ControlPersist=120")
	}
	argv = append(argv, host)
	argv = append(argv, args...)
	return exec.CommandContext(ctx, "ssh", argv...)
}

func (s *sshd) stop() {
	// Masters started with ControlPersist exit when asked: ours, and
	// Ansible's (its own ssh arguments persist them, under ANSIBLE_HOME),
	// which outlived the bench by minutes once their sshd was gone.
	for _, h := range append(s.hosts, "localhost") {
		if _, err := os.Stat(filepath.Join(s.dir, "cm-"+h)); err == nil {
			exec.Command("ssh", "-F", s.config, "-o", "ControlPath="+filepath.Join(s.dir, "cm-%h"), "-O", "exit", h).Run()
		}
	}
	socks, _ := filepath.Glob(filepath.Join(s.dir, "ansible", "cp", "*"))
	for _, sock := range socks {
		exec.Command("ssh", "-F", s.config, "-o", "ControlPath="+sock, "-O", "exit", "localhost").Run()
	}
	for _, p := range s.procs {
		p.stop(3 * time.Second)
	}
}

// pdshCommand runs `uptime` on hosts with pdsh over ssh.
func (s *sshd) pdshCommand(ctx context.Context, hosts []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "pdsh", "-R", "ssh", "-f", "64", "-w", strings.Join(hosts, ","), "uptime")
	cmd.Env = append(os.Environ(), "PDSH_SSH_ARGS=-F "+s.config+" %h")
	return cmd
}

// ansibleCommand runs `ansible all -m command -a uptime -f 32` on hosts.
func (s *sshd) ansibleCommand(ctx context.Context, hosts []string) (*exec.Cmd, error) {
	var inv strings.Builder
	inv.WriteString("[all]\n")
	for i, h := range hosts {
		fmt.Fprintf(&inv, "h%02d ansible_host=%s\n", i, h)
	}
	fmt.Fprintf(&inv, "[all:vars]\nansible_port=%d\nansible_user=root\nansible_ssh_private_key_file=%s/client_key\nansible_ssh_common_args='-F %s'\nansible_python_interpreter=/usr/bin/python3\n", sshPort, s.dir, s.config)
	path := filepath.Join(s.dir, fmt.Sprintf("inventory-%d.ini", len(hosts)))
	if err := os.WriteFile(path, []byte(inv.String()), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "ansible", "all", "-i", path, "-m", "command", "-a", "uptime", "-f", "32")
	home := filepath.Join(s.dir, "ansible")
	cmd.Env = append(os.Environ(), "ANSIBLE_HOST_KEY_CHECKING=False", "ANSIBLE_HOME="+home, "ANSIBLE_LOCAL_TEMP="+filepath.Join(home, "tmp"),
		"ANSIBLE_SSH_CONTROL_PATH_DIR="+filepath.Join(home, "cp"), "ANSIBLE_NOCOLOR=1", "ANSIBLE_DEPRECATION_WARNINGS=False")
	return cmd, nil
}

// allPresent reports whether every want string appears in out.
func allPresent(out []byte, want []string) error {
	for _, w := range want {
		if !bytes.Contains(out, []byte(w)) {
			return fmt.Errorf("output lacks %q: %s", w, lastLine(out))
		}
	}
	return nil
}

func toolVersion(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return ""
	}
	return strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0]
}
