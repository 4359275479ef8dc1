package identity_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"

	"github.com/ambitmesh/ambit/internal/identity"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var td = spiffeid.RequireTrustDomainFromString("example.org")

func wid(ns, sa string) spiffeid.ID {
	id, err := identity.WorkloadID(td, ns, sa)
	if err != nil {
		panic(err)
	}
	return id
}

// event is one CA call as seen by fetcher.
type event struct {
	id   spiffeid.ID
	at   time.Time // when the call started
	leaf *x509.Certificate
	err  error
}

// fetcher wraps a Fetcher (switchable, to move between CAs) and reports
// every call, can fail on demand and can hold calls at a gate.
type fetcher struct {
	mu    sync.Mutex
	ca    identity.Fetcher
	gate  chan struct{}
	fail  atomic.Bool
	calls atomic.Int64

	events chan event
}

func newFetcher(ca identity.Fetcher) *fetcher {
	return &fetcher{ca: ca, events: make(chan event, 10000)}
}

func (f *fetcher) use(ca identity.Fetcher) {
	f.mu.Lock()
	f.ca = ca
	f.mu.Unlock()
}

func (f *fetcher) CreateCertificate(ctx context.Context, id spiffeid.ID, csr []byte, validity time.Duration) (*identity.Issued, error) {
	at := time.Now()
	f.calls.Add(1)
	f.mu.Lock()
	ca, gate := f.ca, f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	var iss *identity.Issued
	var err error
	if f.fail.Load() {
		err = errors.New("CA unavailable (test)")
	} else {
		iss, err = ca.CreateCertificate(ctx, id, csr, validity)
	}
	ev := event{id: id, at: at, err: err}
	if iss != nil {
		ev.leaf = iss.Chain[0]
	}
	select {
	case f.events <- ev:
	default:
		panic("fetcher: event buffer full")
	}
	return iss, err
}

// next waits for the next event matching pred.
func (f *fetcher) next(t *testing.T, within time.Duration, pred func(event) bool) event {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case ev := <-f.events:
			if pred(ev) {
				return ev
			}
		case <-deadline:
			t.Fatalf("no matching CA call within %v", within)
			return event{}
		}
	}
}

func okFor(id spiffeid.ID) func(event) bool {
	return func(ev event) bool { return ev.id == id && ev.err == nil }
}

// startManager runs m until the test ends and checks Run returned.
func startManager(t *testing.T, cfg identity.Config) *identity.Manager {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := identity.NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return m
}

// tlsServer accepts TLS connections with cfg and echoes what it reads.
type tlsServer struct {
	addr    string
	ok      atomic.Int64
	fails   atomic.Int64
	mu      sync.Mutex
	lastErr error
	peers   map[string]int      // SPIFFE IDs of verified clients
	serials map[string]struct{} // client leaf serials seen
	issuers map[string]struct{} // client leaf issuers seen
}

func startTLSServer(t *testing.T, cfg *tls.Config) *tlsServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tlsServer{addr: lis.Addr().String(), peers: map[string]int{}, serials: map[string]struct{}{}, issuers: map[string]struct{}{}}
	var wg sync.WaitGroup
	var connsMu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			connsMu.Lock()
			conns[c] = struct{}{}
			connsMu.Unlock()
			wg.Go(func() {
				defer func() {
					c.Close()
					connsMu.Lock()
					delete(conns, c)
					connsMu.Unlock()
				}()
				tc := tls.Server(c, cfg)
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if err := tc.Handshake(); err != nil {
					s.fails.Add(1)
					s.mu.Lock()
					s.lastErr = err
					s.mu.Unlock()
					return
				}
				_ = c.SetDeadline(time.Time{})
				cs := tc.ConnectionState()
				s.ok.Add(1)
				if id, err := identity.PeerID(cs); err == nil {
					s.mu.Lock()
					s.peers[id.String()]++
					s.serials[cs.PeerCertificates[0].SerialNumber.String()] = struct{}{}
					s.issuers[string(cs.PeerCertificates[0].RawIssuer)] = struct{}{}
					s.mu.Unlock()
				}
				_, _ = io.Copy(tc, tc)
			})
		}
	})
	t.Cleanup(func() {
		lis.Close()
		connsMu.Lock()
		for c := range conns {
			c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	return s
}

func (s *tlsServer) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

func (s *tlsServer) distinctClientSerials() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.serials)
}

// exchange dials addr, completes the handshake and one echoed byte (in TLS
// 1.3 a server's refusal of the client certificate only shows on the first
// read), and returns the server's leaf.
func exchange(addr string, cfg *tls.Config) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{42}); err != nil {
		return nil, err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return nil, err
	}
	return c.ConnectionState().PeerCertificates[0], nil
}

// load runs workers that handshake and exchange a byte in a loop, plus
// long-lived connections that exchange a byte on every loop, until stop.
type load struct {
	ok, fails atomic.Int64
	mu        sync.Mutex
	firstErr  error
	serials   map[string]struct{} // server leaf serials seen
	wg        sync.WaitGroup
}

func runLoad(t *testing.T, addr string, cfg *tls.Config, workers, longLived int, stop <-chan struct{}) *load {
	t.Helper()
	l := &load{serials: map[string]struct{}{}}
	fail := func(err error) {
		l.fails.Add(1)
		l.mu.Lock()
		if l.firstErr == nil {
			l.firstErr = err
		}
		l.mu.Unlock()
	}
	for range workers {
		l.wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				leaf, err := exchange(addr, cfg)
				if err != nil {
					fail(err)
					continue
				}
				l.ok.Add(1)
				l.mu.Lock()
				l.serials[leaf.SerialNumber.String()] = struct{}{}
				l.mu.Unlock()
			}
		})
	}
	for range longLived {
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatalf("long-lived connection: %v", err)
		}
		l.wg.Go(func() {
			defer c.Close()
			var b [1]byte
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				if _, err := c.Write([]byte{7}); err != nil {
					fail(err)
					return
				}
				if _, err := io.ReadFull(c, b[:]); err != nil {
					fail(err)
					return
				}
			}
		})
	}
	return l
}

func (l *load) check(t *testing.T) {
	t.Helper()
	l.wg.Wait()
	if n := l.fails.Load(); n != 0 {
		t.Errorf("%d of %d exchanges failed; first: %v", n, n+l.ok.Load(), l.firstErr)
	}
}

func (l *load) distinctServerSerials() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.serials)
}

func serialOf(c *tls.Certificate) *big.Int { return c.Leaf.SerialNumber }
