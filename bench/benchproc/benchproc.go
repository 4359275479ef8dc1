//go:build linux

// Package benchproc runs and measures the processes of the data path
// benchmarks: it starts them with their output in a log file, reads their
// CPU time and memory from /proc, finds load generators, and runs and
// parses wrk and fortio.
package benchproc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambitmesh/ambit/internal/testkit"
)

// Start runs argv until ctx ends or the benchmark is cleaned up (killed
// then), with its output in dir/<name>.log.
func Start(tb testing.TB, ctx context.Context, dir, name string, env []string, argv ...string) *exec.Cmd {
	tb.Helper()
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.WaitDelay = 5 * time.Second
	// Its own process group, so stopping it stops its children too
	// (nginx's workers outlive a killed master).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	tb.Cleanup(func() {
		// SIGTERM first: a master stops its workers; then the group.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	return cmd
}

// WaitOK polls url until it answers 200 (a readiness endpoint, or traffic
// through a proxy), for up to 20 s.
func WaitOK(tb testing.TB, what, url string) {
	tb.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	testkit.Eventually(tb, 20*time.Second, what+" to answer 200", func() bool {
		resp, err := c.Get(url)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// BuildAmbit builds the ambit binary into dir and returns its path: the
// benchmarks measure the binary users run, not the code in-process.
func BuildAmbit(tb testing.TB, dir string) string {
	tb.Helper()
	return build(tb, dir, "ambit")
}

// build builds cmd/<binary> into dir, dropped from the page cache.
func build(tb testing.TB, dir, binary string) string {
	tb.Helper()
	bin := filepath.Join(dir, binary)
	if out, err := ReleaseBuild(context.Background(), bin, binary).CombinedOutput(); err != nil {
		tb.Fatalf("build %s: %v\n%s", binary, err, out)
	}
	DropPageCache(tb, bin)
	return bin
}

// Ambit returns the ambit binary to benchmark: prebuilt when set (to compare
// builds run by run), else built into dir; either way dropped from the page
// cache.
func Ambit(tb testing.TB, dir, prebuilt string) string {
	tb.Helper()
	return binary(tb, dir, "ambit", prebuilt)
}

// AmbitNode is Ambit for the node proxy's own binary, ambit-node.
func AmbitNode(tb testing.TB, dir, prebuilt string) string {
	tb.Helper()
	return binary(tb, dir, "ambit-node", prebuilt)
}

func binary(tb testing.TB, dir, name, prebuilt string) string {
	tb.Helper()
	if prebuilt == "" {
		return build(tb, dir, name)
	}
	DropPageCache(tb, prebuilt)
	return prebuilt
}

// DropPageCache writes bin to disk and evicts it from the page cache, so the
// processes started from it map it as read from disk, as on a node after a
// pull or a reboot. The file-backed part of RSS depends on the size of the
// page-cache folios the binary sits in (a fault maps its whole folio and the
// pages around it); left as the linker's writes made them, it moved by
// 2-3 MB between otherwise identical builds.
func DropPageCache(tb testing.TB, bin string) {
	tb.Helper()
	f, err := os.Open(bin)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		tb.Fatalf("sync %s: %v", bin, err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		tb.Fatalf("drop %s from the page cache: %v", bin, err)
	}
}

// FreeAddr returns ip:port with a port free on ip now, for a process to
// listen on.
func FreeAddr(tb testing.TB, ip string) string {
	tb.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// FindTool returns the path of a binary: flagValue if set, then PATH,
// then $GOPATH/bin (go install); "" if none.
func FindTool(flagValue, name string) string {
	if flagValue != "" {
		return flagValue
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// Tree returns pid and its direct children (nginx's master and workers).
func Tree(pid int) []int {
	pids := []int{pid}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		if f := statFields(child); len(f) > 1 && f[1] == strconv.Itoa(pid) {
			pids = append(pids, child)
		}
	}
	return pids
}

// statFields are the fields of /proc/PID/stat after the command name
// (state is [0], ppid [1], utime [11], stime [12]).
func statFields(pid int) []string {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	return strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
}

// CPU is the user+system CPU time of the processes (every thread), at
// the kernel's 100 Hz tick.
func CPU(pids []int) time.Duration {
	var sum time.Duration
	for _, pid := range pids {
		f := statFields(pid)
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		sum += time.Duration(ut+st) * 10 * time.Millisecond
	}
	return sum
}

// Memory is what Mem reads from /proc/PID/status, summed over processes,
// in KiB.
type Memory struct {
	RSS, HWM int64 // VmRSS, VmHWM
	// Anon is RssAnon: RSS less the file-backed pages (the executable's
	// text and data, shared libraries), which the kernel can drop.
	Anon int64
}

// Mem reads the memory of the processes.
func Mem(pids []int) Memory {
	var m Memory
	for _, pid := range pids {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), ":")
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			switch k {
			case "VmRSS":
				m.RSS += n
			case "VmHWM":
				m.HWM += n
			case "RssAnon":
				m.Anon += n
			}
		}
		f.Close()
	}
	return m
}

// MachineBusy is the busy CPU time of the whole machine (every CPU) from
// /proc/stat: user, nice, system, irq, softirq, steal.
func MachineBusy() time.Duration {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		if i < len(f) {
			n, _ := strconv.ParseInt(f[i], 10, 64)
			ticks += n
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// LoadAvg is /proc/loadavg's first three fields.
func LoadAvg() string {
	raw, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// Fortio is what the harnesses read from `fortio load -json`.
type Fortio struct {
	ActualQPS         float64
	DurationHistogram struct {
		Count       int64
		Percentiles []struct{ Percentile, Value float64 }
	}
	RetCodes map[string]int64
}

// Percentile returns the recorded percentile p (50, 90, 99).
func (f *Fortio) Percentile(p float64) time.Duration {
	for _, pc := range f.DurationHistogram.Percentiles {
		if pc.Percentile == p {
			return time.Duration(pc.Value * float64(time.Second))
		}
	}
	return 0
}

// RunFortio runs `prefix... fortio load ... args... url` and parses its
// JSON report (written to jsonPath); it also returns the load
// generator's own CPU time.
func RunFortio(tb testing.TB, ctx context.Context, prefix []string, fortio, jsonPath string, args []string, url string) (Fortio, time.Duration) {
	tb.Helper()
	argv := append(append(append(prefix[:len(prefix):len(prefix)], fortio, "load", "-quiet", "-json", jsonPath), args...), url)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("fortio %s: %v\n%s", url, err, msg)
	}
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		tb.Fatal(err)
	}
	var r Fortio
	if err := json.Unmarshal(raw, &r); err != nil {
		tb.Fatalf("fortio json %s: %v", jsonPath, err)
	}
	return r, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// Wrk is what the harnesses read from wrk's summary.
type Wrk struct {
	RPS      float64
	Requests int64
	Errors   int64 // socket errors and non-2xx/3xx answers
}

var (
	wrkRPS      = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkRequests = regexp.MustCompile(`(\d+) requests in`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkSocket   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// RunWrk runs `prefix... wrk args... url` and parses its summary; it also
// returns the load generator's own CPU time.
func RunWrk(tb testing.TB, ctx context.Context, prefix []string, wrk string, args []string, url string) (Wrk, time.Duration) {
	tb.Helper()
	argv := append(append(append(prefix[:len(prefix):len(prefix)], wrk), args...), url)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("wrk %s: %v\n%s", url, err, out)
	}
	var r Wrk
	m := wrkRPS.FindSubmatch(out)
	if m == nil {
		tb.Fatalf("wrk %s: no Requests/sec in:\n%s", url, out)
	}
	r.RPS, _ = strconv.ParseFloat(string(m[1]), 64)
	if m := wrkRequests.FindSubmatch(out); m != nil {
		r.Requests, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	if m := wrkNon2xx.FindSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(string(m[1]), 10, 64)
		r.Errors += n
	}
	if m := wrkSocket.FindSubmatch(out); m != nil {
		for _, g := range m[1:] {
			n, _ := strconv.ParseInt(string(g), 10, 64)
			r.Errors += n
		}
	}
	return r, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}
