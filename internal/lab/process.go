package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	ambitnetns "github.com/ambitmesh/ambit/internal/node/netns"
)

// Process is a child process whose combined output goes to a log file.
type Process struct {
	Name string
	Log  string // path of the output file
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start runs bin with args inside the network namespace at nsPath ("" = this process's own),
// stdout and stderr appended to logPath. The child is started from an OS thread inside the
// namespace (StartIn), so it lives there without `ip netns exec`; a killed run leaves no processes.
func Start(name, nsPath, logPath, bin string, args ...string) (*Process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lab: %s log: %w", name, err)
	}
	defer f.Close() // the child has its own copy
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := StartIn(nsPath, cmd); err != nil {
		return nil, fmt.Errorf("lab: start %s: %w", name, err)
	}
	p := &Process{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// StartIn starts cmd inside the network namespace at nsPath ("" = this process's own), in its own
// process group and, on Linux, killed if this process dies first.
func StartIn(nsPath string, cmd *exec.Cmd) error {
	cmd.SysProcAttr = sysProcAttr()
	if nsPath == "" {
		return cmd.Start()
	}
	// fork(2) copies the calling thread's namespace into the child.
	return ambitnetns.Do(nsPath, cmd.Start)
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is how the process ended (valid after Done).
func (p *Process) Err() error { return p.err }

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Pid is the child's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Output returns what the process wrote so far.
func (p *Process) Output() (string, error) {
	b, err := os.ReadFile(p.Log)
	return string(b), err
}

// Stop sends SIGTERM, waits up to grace, then kills the process group. It returns once the
// process is gone; an exit caused by the signal is not an error.
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		killGroup(p.cmd.Process)
		<-p.done
	}
	var ee *exec.ExitError
	if p.err != nil && !errors.As(p.err, &ee) {
		return fmt.Errorf("lab: stop %s: %w", p.Name, p.err)
	}
	return nil
}
