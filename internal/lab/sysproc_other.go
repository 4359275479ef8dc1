//go:build !unix

package lab

import (
	"os"
	"syscall"
)

func sysProcAttr() *syscall.SysProcAttr { return nil }

func killGroup(p *os.Process) { _ = p.Kill() }

// ProcessAlive cannot tell here, so it says yes: nothing is removed as a leftover.
func ProcessAlive(int) bool { return true }
