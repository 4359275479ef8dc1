//go:build linux

package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/node/netns"
	"github.com/ambitmesh/ambit/internal/node/netns/netnstest"
)

const outsiderIP = "10.2.9.2" // a pod of node 2 that is not in the mesh

const strictMTLS = `
apiVersion: ambit.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec: {mtlsMode: STRICT}
`

// TestLabPeerAuthentication: plaintext from a pod outside the mesh to a mesh
// workload's port reaches the node proxy's 15006. PERMISSIVE (the default)
// lets it through to the app from the client's own IP; MeshConfig STRICT
// refuses it, with an access log line saying mTLS is required and naming the
// mesh-wide policy, while mesh traffic (mTLS) keeps flowing; back to
// PERMISSIVE it passes again. Plaintext aimed at the proxy's own ports is
// refused instead of looping through the proxy.
func TestLabPeerAuthentication(t *testing.T) {
	l := newLab(t)
	outsider := l.extraPod(t, "outsider", outsiderIP, l.node2)
	target := webB1IP + ":" + echoPort
	plaintext := func(path string) error {
		b, err := l.httpGet(outsider.Path, true, "http://"+target+path)
		if err == nil && !strings.Contains(string(b), path) {
			err = fmt.Errorf("answer %q does not echo %s", b, path)
		}
		return err
	}

	t.Run("PermissiveAcceptsPlaintext", func(t *testing.T) {
		if _, err := l.appGet("client-a", target, "/warm"); err != nil {
			t.Fatalf("mesh traffic: %v", err)
		}
		b, err := l.httpGet(outsider.Path, true, "http://"+target+"/plain")
		if err != nil {
			t.Fatalf("plaintext from %s under PERMISSIVE: %v", outsiderIP, err)
		}
		if !strings.Contains(string(b), `"`+outsiderIP+`:`) {
			t.Errorf("the echo's answer %s does not show the outsider's own address %s", b, outsiderIP)
		}
		eventually(t, 5*time.Second, "node-2's plaintext access log line", func() error {
			if len(l.accessLines(t, "node-2", "src.addr="+outsiderIP+":", "dst.addr="+target, "response_flags=-")) == 0 {
				return errors.New("no access log line for the outsider's plaintext connection")
			}
			return nil
		})
	})

	t.Run("PlaintextToTheProxysOwnPortsRefused", func(t *testing.T) {
		for _, port := range []string{"15006", "15001"} {
			d := netns.Dialer{NetNS: outsider.Path, Unmarked: true, Timeout: 3 * time.Second}
			c, err := d.DialContext(l.ctx, "tcp", webB1IP+":"+port)
			if err != nil {
				t.Fatalf("dial %s:%s: %v", webB1IP, port, err)
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			b, err := io.ReadAll(c)
			c.Close()
			// Closed (FIN, or RST for the unread request), never answered or left hanging.
			var ne net.Error
			if len(b) > 0 || errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("to %s:%s the outsider got %q, %v; want the connection closed without an answer", webB1IP, port, b, err)
			}
			from := "src.addr=" + c.LocalAddr().String() + " "
			eventually(t, 5*time.Second, "node-2 to log the refusal once", func() error {
				n := strings.Count(l.nodeProcs["node-2"].log(t), from)
				if n != 1 || len(l.accessLines(t, "node-2", from, "the proxy's own port")) != 1 {
					return fmt.Errorf("%d lines with %s; want exactly 1, saying it is the proxy's own port", n, from)
				}
				return nil
			})
		}
		if err := plaintext("/after-loop-attempt"); err != nil {
			t.Errorf("plaintext to the app after the attempts: %v", err)
		}
	})

	t.Run("StrictRefusesPlaintext", func(t *testing.T) {
		l.writeConfig(t, "meshconfig.yaml", strictMTLS)
		eventually(t, 10*time.Second, "plaintext to be refused under STRICT", func() error {
			if plaintext("/strict") == nil {
				return errors.New("plaintext from the outsider still reaches the app")
			}
			return nil
		})
		eventually(t, 5*time.Second, "node-2's access log to say mTLS is required", func() error {
			if len(l.accessLines(t, "node-2", "src.addr="+outsiderIP+":", "response_flags=DENY",
				"policy=ambit-system/ambit-strict-mtls", "requires mTLS")) == 0 {
				return errors.New("no DENY line naming ambit-system/ambit-strict-mtls and mTLS")
			}
			return nil
		})
		if _, err := l.appGet("client-a", target, "/strict-mesh"); err != nil {
			t.Errorf("mesh traffic (mTLS) under STRICT: %v", err)
		}
		if _, err := l.appGet("client-a", webVIP+":80", "/strict-vip"); err != nil {
			t.Errorf("mesh traffic to the VIP under STRICT: %v", err)
		}
	})

	t.Run("BackToPermissive", func(t *testing.T) {
		l.removeConfig(t, "meshconfig.yaml")
		eventually(t, 10*time.Second, "plaintext to be accepted again", func() error { return plaintext("/permissive-again") })
	})
}

// extraPod adds a pod namespace with address ip on node (its own /24, the
// node end at .1, default route through it, the other node routing the /24
// to this one), beyond the lab's four.
func (l *lab) extraPod(t *testing.T, name, ip string, node netnstest.NS) netnstest.NS {
	t.Helper()
	pod := netnstest.NewNS(t, name)
	a := netip.MustParseAddr(ip)
	netnstest.Veth(t, node, "veth-"+name, netip.PrefixFrom(a.Prev(), 24), pod, "eth0", netip.PrefixFrom(a, 24))
	netnstest.Route(t, pod, netip.MustParsePrefix("0.0.0.0/0"), a.Prev())
	other, via := l.node1, node2IP
	if node == l.node1 {
		other, via = l.node2, node1IP
	}
	netnstest.Route(t, other, netip.PrefixFrom(a, 24).Masked(), netip.MustParseAddr(via))
	return pod
}
