package proxy

import (
	"context"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ambitmesh/ambit/internal/testkit"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// failingListener fails its first Accept calls as a process out of file
// descriptors does.
type failingListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// A TCP or TLS port keeps accepting after a failed accept (EMFILE under
// a connection flood): the gateway never reopens a port it holds, so a
// port that stopped there would be dead until a restart.
func TestPortSurvivesAcceptErrors(t *testing.T) {
	l := &gatewayv1.Listener{Name: "db", Port: 5432, Protocol: "TCP", VirtualHosts: []*gatewayv1.VirtualHost{{Hostname: "*",
		Routes: []*gatewayv1.Route{{Source: &gatewayv1.RouteSource{Kind: "TCPRoute", Namespace: "default", Name: "db"},
			Backends: []*gatewayv1.BackendRef{ref("db", 1)}}}}}}
	logs := &testkit.LogBuffer{}
	e, err := New(Config{AccessLog: testLogger(logs), Logger: testLogger(logs)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	if err := e.Apply([]*gatewayv1.Listener{l}, nil, []*gatewayv1.Backend{backend("db", tcpEcho(t))}); err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &failingListener{Listener: inner}
	ln.fails.Store(3)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.ServeListener(ctx, ln, 5432, FamilyTCP, time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoCheck(t, c)
	waitLog(t, logs, `"msg":"proxy: accept failed; retrying"`)
}
