package lab

import (
	"os/exec"
	"testing"
	"time"
)

// A child that exited but was not reaped yet (a zombie) is not alive: its namespaces are leftovers.
func TestProcessAliveZombie(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for ProcessAlive(cmd.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d (exited, unreaped) still counts as alive after 5s", cmd.Process.Pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
