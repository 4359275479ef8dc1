package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/structpb"

	discovery "github.com/ambitmesh/ambit/proto/ambit/xds/v1"
)

// ErrInvalidConfig is wrapped by every error New returns for a bad Config.
var ErrInvalidConfig = errors.New("xdsclient: invalid config")

// DefaultMaxRecvMsgSize is large enough for the initial push of a big mesh
// (gRPC's own default of 4 MiB is not).
const DefaultMaxRecvMsgSize = 64 << 20

// Config configures a Client.
type Config struct {
	// Address is the gRPC target of the control plane, e.g. "127.0.0.1:15010"
	// or "dns:///ambit-control.ambit-system:15010".
	Address string
	// NodeID identifies this proxy to the control plane, e.g. "node/worker-1".
	NodeID string
	// NodeMetadata is sent as node.metadata (optional).
	NodeMetadata *structpb.Struct

	// Token, when set, is sent on every stream as "authorization: Bearer <Token>".
	Token string
	// TokenFunc, when set, is called before every connection attempt and its
	// result sent like Token; use it for tokens that rotate on disk. Mutually
	// exclusive with Token.
	TokenFunc func(context.Context) (string, error)
	// TransportCredentials secures the connection (mTLS). Nil means plaintext.
	TransportCredentials credentials.TransportCredentials
	// DialOptions are appended to the client's own (e.g. keepalive, which the
	// server must permit).
	DialOptions []grpc.DialOption
	// MaxRecvMsgSize bounds one response; 0 means DefaultMaxRecvMsgSize.
	MaxRecvMsgSize int

	// TypeURLs are the resource types to subscribe to (wildcard), e.g.
	// "type.googleapis.com/ambit.workload.v1.Workload". Each must be
	// registered in protoregistry.GlobalTypes (import the generated package).
	TypeURLs []string
	// Validate, when set, checks each candidate snapshot before it is
	// accepted; an error NACKs the response and keeps the previous snapshot.
	// It must not modify or retain-and-modify the snapshot.
	Validate func(*Snapshot) error

	Logger  *slog.Logger
	Backoff Backoff
}

func (cfg *Config) validate() error {
	var errs []error
	if cfg.Address == "" {
		errs = append(errs, errors.New("Address is empty: want the control plane's gRPC target, e.g. 127.0.0.1:15010"))
	}
	if cfg.NodeID == "" {
		errs = append(errs, errors.New("NodeID is empty: want this proxy's identity, e.g. node/worker-1"))
	}
	if cfg.Token != "" && cfg.TokenFunc != nil {
		errs = append(errs, errors.New("Token and TokenFunc are both set: set at most one"))
	}
	if cfg.MaxRecvMsgSize < 0 {
		errs = append(errs, fmt.Errorf("MaxRecvMsgSize is %d: want a positive size or 0 for %d", cfg.MaxRecvMsgSize, DefaultMaxRecvMsgSize))
	}
	if len(cfg.TypeURLs) == 0 {
		errs = append(errs, errors.New("TypeURLs is empty: want at least one type URL to subscribe to"))
	}
	seen := map[string]bool{}
	for i, t := range cfg.TypeURLs {
		switch {
		case seen[t]:
			errs = append(errs, fmt.Errorf("TypeURLs[%d] %q: listed twice: each type once", i, t))
		case !strings.HasPrefix(t, typeURLPrefix) || len(t) == len(typeURLPrefix):
			errs = append(errs, fmt.Errorf("TypeURLs[%d] %q: want %s<full.message.Name>", i, t, typeURLPrefix))
		default:
			if _, err := protoregistry.GlobalTypes.FindMessageByURL(t); err != nil {
				errs = append(errs, fmt.Errorf("TypeURLs[%d] %q: no Go type registered (import its generated package): %w", i, t, err))
			}
		}
		seen[t] = true
	}
	if err := cfg.Backoff.validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	return nil
}

// Client keeps one delta ADS stream to the control plane and publishes the
// resulting snapshots. Create it with New, drive it with Run.
type Client struct {
	cfg      Config
	log      *slog.Logger
	backoff  Backoff
	typeURLs []string // sorted

	current atomic.Pointer[Snapshot]
	running atomic.Bool

	mu      sync.Mutex    // guards changed and status
	changed chan struct{} // closed (and replaced) on every snapshot swap
	status  Status
}

// New checks cfg and returns a Client. It does no I/O.
func New(cfg Config) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxRecvMsgSize == 0 {
		cfg.MaxRecvMsgSize = DefaultMaxRecvMsgSize
	}
	cfg.TypeURLs = slices.Clone(cfg.TypeURLs)
	c := &Client{
		cfg:      cfg,
		log:      log.With("component", "xdsclient", "server", cfg.Address, "node", cfg.NodeID),
		backoff:  cfg.Backoff.withDefaults(),
		typeURLs: slices.Sorted(slices.Values(cfg.TypeURLs)),
		changed:  make(chan struct{}),
	}
	c.current.Store(newEmptySnapshot(cfg.TypeURLs))
	c.status = Status{Address: cfg.Address, Types: map[string]TypeStatus{}}
	for _, t := range cfg.TypeURLs {
		c.status.Types[t] = TypeStatus{}
	}
	return c, nil
}

// Current returns the latest accepted snapshot; never nil (generation 0 and
// empty before the first accepted response). Lock-free.
func (c *Client) Current() *Snapshot { return c.current.Load() }

// Changed returns a channel that is closed when a snapshot newer than the
// one current at the time of the call is installed. Any number of readers
// may wait on it; call Changed again (before Current) for the next change.
func (c *Client) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// Watch calls fn with the current snapshot if one has been accepted, then
// with each newer one, until ctx ends. Snapshots installed while fn runs are
// coalesced: fn sees the latest, not each one. Returns nil when ctx ends.
func (c *Client) Watch(ctx context.Context, fn func(*Snapshot)) error {
	var seen uint64
	for {
		ch := c.Changed() // before Current, so a swap in between is not missed
		if s := c.Current(); s.Generation() > seen {
			seen = s.Generation()
			fn(s)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
		}
	}
}

// WaitSynced blocks until a snapshot holding an accepted response for every
// subscribed type exists (readiness), and returns it.
func (c *Client) WaitSynced(ctx context.Context) (*Snapshot, error) {
	for {
		ch := c.Changed()
		if s := c.Current(); s.Synced() {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("xdsclient: waiting for the initial config from %s: %w", c.cfg.Address, ctx.Err())
		case <-ch:
		}
	}
}

// Run connects to the control plane and keeps a stream open until ctx ends,
// reconnecting with backoff. It returns nil once ctx ends, or an error if Run
// is already running.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("xdsclient: Run called while already running")
	}
	defer c.running.Store(false)

	attempt := 0
	for {
		served, err := c.runStream(ctx)
		c.setDisconnected(err)
		if ctx.Err() != nil {
			c.log.Info("stopped")
			return nil
		}
		if served >= c.backoff.StableAfter {
			attempt = 0
		}
		delay := c.backoff.Delay(attempt)
		attempt++
		c.log.Warn("stream ended, reconnecting", "error", err, "attempt", attempt, "delay", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			c.log.Info("stopped")
			return nil
		case <-t.C:
		}
	}
}

// runStream dials, subscribes and processes responses until the stream
// fails. served is how long the stream was serving since its first response.
func (c *Client) runStream(ctx context.Context) (served time.Duration, err error) {
	creds := c.cfg.TransportCredentials
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(c.cfg.MaxRecvMsgSize)),
		grpc.WithUserAgent("ambit-xdsclient"),
	}, c.cfg.DialOptions...)
	// A fresh ClientConn per attempt keeps all retry timing in our backoff
	// (not gRPC's separate reconnect backoff) and re-resolves the target, so
	// a restarted or rescheduled control plane is found again.
	conn, err := grpc.NewClient(c.cfg.Address, opts...)
	if err != nil {
		return 0, fmt.Errorf("xdsclient: dial %s: %w", c.cfg.Address, err)
	}
	defer conn.Close()

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	token := c.cfg.Token
	if c.cfg.TokenFunc != nil {
		if token, err = c.cfg.TokenFunc(ctx); err != nil {
			return 0, fmt.Errorf("xdsclient: get token: %w", err)
		}
	}
	if token != "" {
		sctx = metadata.AppendToOutgoingContext(sctx, "authorization", "Bearer "+token)
	}

	stream, err := openDeltaADS(sctx, conn)
	if err != nil {
		return 0, fmt.Errorf("xdsclient: open delta ADS stream to %s: %w", c.cfg.Address, err)
	}
	send := func(req *discovery.DeltaDiscoveryRequest) error {
		if err := stream.Send(req); err != nil {
			if errors.Is(err, io.EOF) {
				// The real reason is in the stream's status, surfaced by Recv.
				_, err = stream.Recv()
			}
			return fmt.Errorf("xdsclient: send %s request to %s: %w", req.GetTypeUrl(), c.cfg.Address, err)
		}
		return nil
	}

	node := &discovery.Node{Id: c.cfg.NodeID, Metadata: c.cfg.NodeMetadata, UserAgentName: "ambit"}
	held := c.Current()
	for _, t := range c.typeURLs {
		req := &discovery.DeltaDiscoveryRequest{
			Node:                    node,
			TypeUrl:                 t,
			ResourceNamesSubscribe:  []string{"*"}, // explicit wildcard: valid whether or not the server allows legacy wildcard
			InitialResourceVersions: held.Versions(t),
		}
		if err := send(req); err != nil {
			return 0, err
		}
	}

	var since time.Time
	defer func() {
		if !since.IsZero() {
			served = time.Since(since)
		}
	}()
	for {
		resp, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return served, ctx.Err()
			}
			return served, fmt.Errorf("xdsclient: receive from %s: %w", c.cfg.Address, err)
		}
		if since.IsZero() {
			since = time.Now()
			c.setConnected(since)
		}
		if err := send(c.handle(resp)); err != nil {
			return served, err
		}
	}
}

// deltaADSMethod is Envoy's aggregated delta xDS method, which ambit's
// control plane serves with go-control-plane. The messages are ambit's
// wire-identical subset (proto/ambit/xds/v1), so the stream is opened by
// name here rather than through go-control-plane's generated client.
const deltaADSMethod = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"

type deltaADSStream = grpc.BidiStreamingClient[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse]

func openDeltaADS(ctx context.Context, conn *grpc.ClientConn) (deltaADSStream, error) {
	desc := &grpc.StreamDesc{StreamName: "DeltaAggregatedResources", ServerStreams: true, ClientStreams: true}
	s, err := conn.NewStream(ctx, desc, deltaADSMethod)
	if err != nil {
		return nil, err
	}
	return &grpc.GenericClientStream[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse]{ClientStream: s}, nil
}

// handle applies one response and returns the ACK or NACK to send.
func (c *Client) handle(resp *discovery.DeltaDiscoveryResponse) *discovery.DeltaDiscoveryRequest {
	typeURL := resp.GetTypeUrl()
	ack := &discovery.DeltaDiscoveryRequest{TypeUrl: typeURL, ResponseNonce: resp.GetNonce()}

	// Only this goroutine writes c.current, so Load+Store cannot lose an update.
	next, err := applyDelta(c.Current(), resp, c.cfg.Validate)
	if err != nil {
		ack.ErrorDetail = &discovery.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
		c.recordNACK(resp, err)
		c.log.Warn("rejected config (NACK), keeping the last good one",
			"type", typeURL, "nonce", resp.GetNonce(), "version", resp.GetSystemVersionInfo(), "error", err)
		return ack
	}
	c.current.Store(next)
	c.recordACK(resp, next)
	c.log.Debug("accepted config (ACK)", "type", typeURL, "nonce", resp.GetNonce(),
		"updated", len(resp.GetResources()), "removed", len(resp.GetRemovedResources()), "generation", next.Generation())
	return ack
}

// Status is a point-in-time copy of the client's state, for `ambit status`,
// the admin endpoint and metrics.
type Status struct {
	Address string
	// Connected is true while a stream is open and the control plane has
	// answered on it.
	Connected      bool
	ConnectedSince time.Time
	// Connects counts streams that got at least one response.
	Connects uint64
	// LastError is why the last stream ended ("" if none has).
	LastError   string
	LastErrorAt time.Time
	// LastNACK is the most recent rejection of any type; nil if none.
	LastNACK *NACK
	// Generation and Synced describe Current().
	Generation uint64
	Synced     bool
	Types      map[string]TypeStatus
}

// TypeStatus is the per type URL part of Status.
type TypeStatus struct {
	Resources int
	// AckedVersion is the system_version_info of the last accepted response
	// and AckedNonce its nonce.
	AckedVersion string
	AckedNonce   string
	AckedAt      time.Time
	ACKs, NACKs  uint64
	// LastNACK is the most recent rejection (kept after later ACKs so an
	// operator can still see why a push was refused); nil if none.
	LastNACK *NACK
}

// NACK records one rejected response.
type NACK struct {
	TypeURL string
	Nonce   string
	Version string
	Error   string
	At      time.Time
}

// Status returns a copy of the client's state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.status
	s.Types = maps.Clone(c.status.Types)
	cur := c.Current()
	s.Generation, s.Synced = cur.Generation(), cur.Synced()
	return s
}

func (c *Client) setConnected(at time.Time) {
	c.mu.Lock()
	c.status.Connected, c.status.ConnectedSince = true, at
	c.status.Connects++
	c.mu.Unlock()
	c.log.Info("connected")
}

func (c *Client) setDisconnected(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status.Connected, c.status.ConnectedSince = false, time.Time{}
	if err != nil && !errors.Is(err, context.Canceled) {
		c.status.LastError, c.status.LastErrorAt = err.Error(), time.Now()
	}
}

func (c *Client) recordACK(resp *discovery.DeltaDiscoveryResponse, next *Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.status.Types[resp.GetTypeUrl()]
	ts.Resources = next.Len(resp.GetTypeUrl())
	ts.AckedVersion, ts.AckedNonce, ts.AckedAt = resp.GetSystemVersionInfo(), resp.GetNonce(), time.Now()
	ts.ACKs++
	c.status.Types[resp.GetTypeUrl()] = ts
	// Wake waiters only after the new snapshot is visible (stored above).
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *Client) recordNACK(resp *discovery.DeltaDiscoveryResponse, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := &NACK{TypeURL: resp.GetTypeUrl(), Nonce: resp.GetNonce(), Version: resp.GetSystemVersionInfo(), Error: err.Error(), At: time.Now()}
	c.status.LastNACK = n
	if ts, ok := c.status.Types[resp.GetTypeUrl()]; ok { // not for a type we never subscribed to
		ts.NACKs++
		ts.LastNACK = n
		c.status.Types[resp.GetTypeUrl()] = ts
	}
}
