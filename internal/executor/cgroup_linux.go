package executor

// The cgroup code speaks cgroupfs directly rather than through
// github.com/containerd/cgroups/v3: we need a dozen files of each version,
// and the library would pull in the OCI runtime spec, systemd's D-Bus client
// and eBPF, yet still leave us to write the parts that matter here (nesting
// under the worker's own v1 cgroups in hybrid mode, kill-until-empty with
// the v1 freezer, reading oom_kill from memory.oom_control).

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/devops-platform/devops"
)

// The v1 controllers the executor uses. cpuacct counts CPU time, freezer
// stops a tree so it can be killed without racing its forks.
var v1Controllers = []string{"memory", "cpu", "cpuacct", "pids", "freezer"}

// killTimeout bounds how long a kill waits for a cgroup to empty.
const killTimeout = 5 * time.Second

// cgroups is the subtree the worker owns: one directory on v2, one per
// controller on v1.
type cgroups struct {
	version string // "v1" or "v2"
	log     *slog.Logger
	base    map[string]string // controller ("" on v2) -> directory of the subtree
	memory  bool
	cpu     bool
	pids    bool
}

// detectCgroups finds a usable hierarchy and creates the subtree name in it:
// v2 when the unified hierarchy has the controllers (pure v2 machines), v1
// otherwise (hybrid and legacy machines, whose cgroup2 mount is near empty).
// It returns nil and why when neither is usable.
func detectCgroups(name string, log *slog.Logger) (*cgroups, error) {
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	var errs []error
	if mnt, ok := mounts["cgroup2"]; ok {
		cg, err := setupV2(mnt, name, log)
		if err == nil {
			return cg, nil
		}
		errs = append(errs, fmt.Errorf("cgroup v2: %w", err))
	}
	cg, err := setupV1(mounts, name, log)
	if err == nil {
		return cg, nil
	}
	errs = append(errs, fmt.Errorf("cgroup v1: %w", err))
	return nil, errors.Join(errs...)
}

// cgroupMounts maps "cgroup2" and each v1 controller to its mount point.
func cgroupMounts() (map[string]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	mounts := make(map[string]string)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 {
			continue
		}
		switch qf[0] {
		case "cgroup2":
			if _, seen := mounts["cgroup2"]; !seen {
				mounts["cgroup2"] = pf[4]
			}
		case "cgroup":
			for _, opt := range strings.Split(qf[2], ",") {
				if slices.Contains(v1Controllers, opt) {
					if _, seen := mounts[opt]; !seen {
						mounts[opt] = pf[4]
					}
				}
			}
		}
	}
	return mounts, sc.Err()
}

// setupV2 enables the controllers for the subtree at the root of the unified
// hierarchy. The subtree sits at the root rather than under the worker's own
// cgroup: v2 forbids enabling controllers below a cgroup holding processes,
// and the worker is one.
func setupV2(mnt, name string, log *slog.Logger) (*cgroups, error) {
	avail, err := os.ReadFile(filepath.Join(mnt, "cgroup.controllers"))
	if err != nil {
		return nil, err
	}
	have := strings.Fields(string(avail))
	want := []string{"memory", "cpu", "pids"}
	if !slices.ContainsFunc(want, func(c string) bool { return slices.Contains(have, c) }) {
		return nil, fmt.Errorf("no memory, cpu or pids controller in %s", mnt)
	}
	base := filepath.Join(mnt, name)
	if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, err
	}
	cg := &cgroups{version: "v2", log: log, base: map[string]string{"": base}}
	for _, c := range want {
		if !slices.Contains(have, c) {
			continue
		}
		// Enabling may fail for one controller (e.g. cpu with realtime
		// tasks around) without spoiling the others.
		if err := writeFile(filepath.Join(mnt, "cgroup.subtree_control"), "+"+c); err != nil {
			log.Debug("enable cgroup controller at root", "controller", c, logKeyError, err)
		}
		if err := writeFile(filepath.Join(base, "cgroup.subtree_control"), "+"+c); err != nil {
			log.Debug("enable cgroup controller", "controller", c, logKeyError, err)
		}
	}
	on, err := os.ReadFile(filepath.Join(base, "cgroup.subtree_control"))
	if err != nil {
		return nil, err
	}
	enabled := strings.Fields(string(on))
	cg.memory = slices.Contains(enabled, "memory")
	cg.cpu = slices.Contains(enabled, "cpu")
	cg.pids = slices.Contains(enabled, "pids")
	if !cg.memory && !cg.cpu && !cg.pids {
		os.Remove(base)
		return nil, fmt.Errorf("cannot enable controllers in %s", base)
	}
	return cg, nil
}

// setupV1 creates the subtree under the worker's own cgroup of each
// controller, so the worker's own limits and accounting still cover its
// processes (v1 has no rule against that nesting).
func setupV1(mounts map[string]string, name string, log *slog.Logger) (*cgroups, error) {
	own, err := ownCgroups()
	if err != nil {
		return nil, err
	}
	cg := &cgroups{version: "v1", log: log, base: make(map[string]string)}
	var errs []error
	for _, c := range v1Controllers {
		mnt, ok := mounts[c]
		if !ok {
			continue
		}
		dir := filepath.Join(mnt, own[c], name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		cg.base[c] = dir
	}
	if cg.base["freezer"] == "" && cg.base["pids"] == "" && cg.base["memory"] == "" {
		return nil, errors.Join(append(errs, errors.New("no writable memory, pids or freezer hierarchy"))...)
	}
	_, cg.memory = cg.base["memory"]
	_, cg.cpu = cg.base["cpu"]
	_, cg.pids = cg.base["pids"]
	return cg, nil
}

// ownCgroups maps each v1 controller to the worker's own cgroup path.
func ownCgroups() (map[string]string, error) {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	own := make(map[string]string)
	for line := range strings.Lines(string(data)) {
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			own[c] = parts[2]
		}
	}
	return own, nil
}

// close leaves the subtree in place: every worker on a machine shares it,
// and removing it under another worker's feet makes its next start fail
// (an empty cgroup directory costs nothing). Processes that outlive their
// worker also keep their cgroups in it.
func (c *cgroups) close() error {
	return nil
}

// cgroup is the cgroup of one process.
type cgroup struct {
	version string
	log     *slog.Logger
	dirs    map[string]string // controller ("" on v2) -> directory
}

// create makes the cgroup of one process with its limits.
func (c *cgroups) create(id devops.ProcessID, lim devops.Limits) (*cgroup, error) {
	cg := &cgroup{version: c.version, log: c.log, dirs: make(map[string]string)}
	for ctrl, base := range c.base {
		dir := filepath.Join(base, string(id))
		if err := os.Mkdir(dir, 0o755); err != nil {
			cg.destroy()
			return nil, fmt.Errorf("create cgroup: %w", err)
		}
		cg.dirs[ctrl] = dir
	}
	if err := cg.limit(lim); err != nil {
		cg.destroy()
		return nil, err
	}
	return cg, nil
}

// limit writes the limits asked; zero fields stay unlimited.
func (cg *cgroup) limit(lim devops.Limits) error {
	type setting struct{ ctrl, file, value string }
	var set []setting
	const period = 100000 // µs, the kernel's default CFS period
	quota := int64(lim.CPUs * period)
	if lim.CPUs > 0 && quota < 1000 {
		quota = 1000 // the kernel's minimum
	}
	if cg.version == "v2" {
		if lim.MemoryBytes > 0 {
			m := strconv.FormatInt(lim.MemoryBytes, 10)
			set = append(set, setting{"", "memory.max", m}, setting{"", "memory.swap.max", "0"})
		}
		if lim.CPUs > 0 {
			set = append(set, setting{"", "cpu.max", fmt.Sprintf("%d %d", quota, period)})
		}
		if lim.Pids > 0 {
			set = append(set, setting{"", "pids.max", strconv.FormatInt(lim.Pids, 10)})
		}
	} else {
		if lim.MemoryBytes > 0 {
			m := strconv.FormatInt(lim.MemoryBytes, 10)
			// memsw (memory+swap) must follow the memory limit and may be
			// absent without swap accounting.
			set = append(set, setting{"memory", "memory.limit_in_bytes", m}, setting{"memory", "memory.memsw.limit_in_bytes", m})
		}
		if lim.CPUs > 0 {
			set = append(set, setting{"cpu", "cpu.cfs_period_us", strconv.Itoa(period)}, setting{"cpu", "cpu.cfs_quota_us", strconv.FormatInt(quota, 10)})
		}
		if lim.Pids > 0 {
			set = append(set, setting{"pids", "pids.max", strconv.FormatInt(lim.Pids, 10)})
		}
	}
	for _, s := range set {
		dir, ok := cg.dirs[s.ctrl]
		if !ok {
			return fmt.Errorf("%w: no %s cgroup controller for %s", devops.ErrInvalid, s.ctrl, s.file)
		}
		err := writeFile(filepath.Join(dir, s.file), s.value)
		if err != nil && (s.file == "memory.memsw.limit_in_bytes" || s.file == "memory.swap.max") && errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("set cgroup %s: %w", s.file, err)
		}
	}
	return nil
}

// pidsFile is the path of the pids limit; empty without the controller.
func (cg *cgroup) pidsFile() string {
	if cg.version == "v2" {
		return filepath.Join(cg.dirs[""], "pids.max")
	}
	if dir, ok := cg.dirs["pids"]; ok {
		return filepath.Join(dir, "pids.max")
	}
	return ""
}

// procsDir is the directory whose cgroup.procs lists the tree; on v1 any
// hierarchy does since every process joined them all and children inherit.
func (cg *cgroup) procsDir() string {
	for _, c := range []string{"", "freezer", "pids", "memory", "cpu", "cpuacct"} {
		if d, ok := cg.dirs[c]; ok {
			return d
		}
	}
	return ""
}

// procs lists the processes in the cgroup.
func (cg *cgroup) procs() []int {
	data, err := os.ReadFile(filepath.Join(cg.procsDir(), "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// signal sends sig to every process in the cgroup.
func (cg *cgroup) signal(sig syscall.Signal) { cg.signalExcept(sig, 0) }

// signalExcept sends sig to every process in the cgroup but pid.
func (cg *cgroup) signalExcept(sig syscall.Signal, pid int) {
	for _, p := range cg.procs() {
		if p != pid {
			syscall.Kill(p, sig)
		}
	}
}

// kill SIGKILLs every process in the cgroup until none is left: with
// cgroup.kill on v2, else by freezing the tree (so it cannot fork while being
// killed) and killing each member, repeatedly.
func (cg *cgroup) kill() {
	deadline := time.Now().Add(killTimeout)
	if cg.version == "v2" {
		if err := writeFile(filepath.Join(cg.dirs[""], "cgroup.kill"), "1"); err == nil {
			if !cg.waitEmpty(deadline) {
				cg.log.Warn("cgroup not empty after cgroup.kill", "left", len(cg.procs()))
			}
			return
		}
	}
	freezer := cg.dirs["freezer"]
	for {
		pids := cg.procs()
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			cg.log.Warn("cgroup not empty after kill", "left", len(pids))
			return
		}
		if freezer != "" {
			cg.freeze(freezer, "FROZEN", deadline)
		}
		for _, pid := range cg.procs() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if freezer != "" {
			// SIGKILL is delivered only once a task runs again.
			cg.freeze(freezer, "THAWED", deadline)
		}
		cg.waitEmpty(time.Now().Add(100 * time.Millisecond))
	}
}

// freeze sets the v1 freezer state and waits until the kernel reached it.
func (cg *cgroup) freeze(dir, state string, deadline time.Time) {
	file := filepath.Join(dir, "freezer.state")
	if err := writeFile(file, state); err != nil {
		cg.log.Debug("set freezer state", "state", state, logKeyError, err)
		return
	}
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(file)
		if err != nil || strings.TrimSpace(string(b)) == state {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// waitEmpty polls until the cgroup holds no process, or deadline.
func (cg *cgroup) waitEmpty(deadline time.Time) bool {
	for {
		if len(cg.procs()) == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// usage reads CPU time, peak memory and whether the OOM killer struck.
// A zero field means the kernel does not count it.
func (cg *cgroup) usage() usage {
	var u usage
	if cg.version == "v2" {
		dir := cg.dirs[""]
		if v, ok := keyedValue(filepath.Join(dir, "cpu.stat"), "usage_usec"); ok {
			u.cpu = time.Duration(v) * time.Microsecond
		}
		if v, err := readInt(filepath.Join(dir, "memory.peak")); err == nil {
			u.peak = v
		}
		if v, ok := keyedValue(filepath.Join(dir, "memory.events"), "oom_kill"); ok {
			u.oomKilled = v > 0
		}
		return u
	}
	if dir, ok := cg.dirs["cpuacct"]; ok {
		if v, err := readInt(filepath.Join(dir, "cpuacct.usage")); err == nil {
			u.cpu = time.Duration(v)
		}
	}
	if dir, ok := cg.dirs["memory"]; ok {
		if v, err := readInt(filepath.Join(dir, "memory.max_usage_in_bytes")); err == nil {
			u.peak = v
		}
		if v, ok := keyedValue(filepath.Join(dir, "memory.oom_control"), "oom_kill"); ok {
			u.oomKilled = v > 0
		} else if v, err := readInt(filepath.Join(dir, "memory.failcnt")); err == nil {
			// Kernels before 4.13 have no oom_kill counter; hitting the
			// limit is the closest sign.
			u.oomKilled = v > 0
		}
	}
	return u
}

// destroy removes the cgroup's directories; the kernel refuses while a
// dying process still counts, so it retries briefly.
func (cg *cgroup) destroy() {
	deadline := time.Now().Add(time.Second)
	for _, dir := range cg.dirs {
		for {
			err := os.Remove(dir)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				cg.log.Warn("remove cgroup", logKeyError, err)
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func writeFile(path, value string) error {
	return os.WriteFile(path, []byte(value), 0)
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// keyedValue reads "key value" lines (cpu.stat, memory.events,
// memory.oom_control) and returns the value of key.
func keyedValue(path, key string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == key {
			v, err := strconv.ParseInt(f[1], 10, 64)
			return v, err == nil
		}
	}
	return 0, false
}
