//go:build linux

package e2e

import (
	"fmt"
	"testing"
)

const clientID = "spiffe://cluster.local/ns/shop/sa/client"

// TestLab runs one topology and checks the data path end to end. The
// subtests share it and run in order.
func TestLab(t *testing.T) {
	l := newLab(t)

	// An unchanged app in pod client-a (node 1) reaches the echo in node 2's
	// pods by the service VIP (both endpoints, round robin) and by pod IP,
	// and the echo sees the client pod's own address.
	t.Run("CapturedAppReachesServiceAndPod", func(t *testing.T) {
		pods := map[string]int{}
		for i := range 4 {
			r, err := l.appGet("client-a", webVIP+":80", fmt.Sprintf("/vip-%d", i))
			if err != nil {
				t.Fatalf("client-a -> %s:80: %v", webVIP, err)
			}
			if hostOf(r.RemoteAddr) != clientIP || r.Path != fmt.Sprintf("/vip-%d", i) {
				t.Errorf("via the VIP the echo in %s saw %q from %s; want /vip-%d from client-a's %s", r.Pod, r.Path, r.RemoteAddr, i, clientIP)
			}
			pods[r.Pod]++
		}
		if pods["web-b1"] == 0 || pods["web-b2"] == 0 {
			t.Errorf("4 requests to the VIP reached %v; want both web-b1 and web-b2", pods)
		}
		for _, w := range []struct{ ip, pod string }{{webB1IP, "web-b1"}, {webB2IP, "web-b2"}} {
			r, err := l.appGet("client-a", w.ip+":"+echoPort, "/direct")
			if err != nil {
				t.Fatalf("client-a -> %s: %v", w.ip, err)
			}
			if r.Pod != w.pod || hostOf(r.RemoteAddr) != clientIP || hostOf(r.LocalAddr) != w.ip {
				t.Errorf("direct to %s: echo %s saw %s -> %s; want %s from %s", w.ip, r.Pod, r.RemoteAddr, r.LocalAddr, w.pod, clientIP)
			}
		}
	})
}
