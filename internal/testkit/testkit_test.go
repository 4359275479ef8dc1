package testkit_test

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/testkit"
)

func TestCommonPortIsFreeOnEveryAddress(t *testing.T) {
	addrs := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	port := testkit.CommonPort(t, addrs...)
	for _, a := range addrs {
		l, err := net.Listen("tcp", fmt.Sprintf("%s:%d", a, port))
		if err != nil {
			t.Fatalf("port %d on %s: %v", port, a, err)
		}
		defer l.Close()
	}
}

func TestLogBufferRecordsConcurrentLines(t *testing.T) {
	var b testkit.LogBuffer
	log := slog.New(slog.NewJSONHandler(&b, nil))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { log.Info("line", "n", i) })
	}
	wg.Wait()
	recs := b.Records(t)
	seen := map[float64]bool{}
	for _, r := range recs {
		if r["msg"] != "line" {
			t.Errorf("record %v, want msg line", r)
		}
		seen[r["n"].(float64)] = true
	}
	if len(recs) != 8 || len(seen) != 8 {
		t.Errorf("%d records with %d distinct n, want 8 and 8:\n%s", len(recs), len(seen), b.String())
	}
}

func TestEventuallyWaitsForTheCondition(t *testing.T) {
	start := time.Now()
	testkit.Eventually(t, 5*time.Second, "50ms to pass", func() bool { return time.Since(start) >= 50*time.Millisecond })
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("returned after %v, before the condition held", d)
	}
}
