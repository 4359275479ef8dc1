// Package testkit holds the small helpers the tests of several packages
// need alike: polling a condition with a deadline (never a sleep as
// synchronisation), a goroutine-safe buffer for JSON log lines, and a port
// free on several loopback addresses at once.
package testkit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// Eventually polls cond every 10ms until it holds, and fails the test if
// it does not within the given time.
func Eventually(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// LogBuffer collects the JSON log lines of a slog.JSONHandler written
// from several goroutines.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Records parses every line written so far; a line that is not a JSON
// object fails the test.
func (l *LogBuffer) Records(tb testing.TB) []map[string]any {
	tb.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader([]byte(l.String())))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			tb.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// CommonPort finds a TCP port free on every address, for a listener that
// has the same port on several addresses (the HBONE port of every node
// proxy and waypoint).
func CommonPort(tb testing.TB, addrs ...string) uint16 {
	tb.Helper()
	for range 20 {
		l, err := net.Listen("tcp", net.JoinHostPort(addrs[0], "0"))
		if err != nil {
			tb.Fatal(err)
		}
		ls := []net.Listener{l}
		port := l.Addr().(*net.TCPAddr).Port
		ok := true
		for _, a := range addrs[1:] {
			o, err := net.Listen("tcp", net.JoinHostPort(a, fmt.Sprint(port)))
			if err != nil {
				ok = false
				break
			}
			ls = append(ls, o)
		}
		for _, l := range ls {
			l.Close()
		}
		if ok {
			return uint16(port)
		}
	}
	tb.Fatalf("no port free on all of %v", addrs)
	return 0
}
