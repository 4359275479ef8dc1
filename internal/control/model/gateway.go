package model

import "time"

// GatewayClass is the role a Gateway plays in the mesh.
type GatewayClass string

const (
	// ClassWaypoint: gatewayClassName ambit-waypoint, an L7 proxy for
	// services/workloads that opt in, reached over HBONE.
	ClassWaypoint GatewayClass = "waypoint"
	// ClassIngress: gatewayClassName ambit, north-south listeners.
	ClassIngress GatewayClass = "ingress"
)

// Gateway is an accepted waypoint or ingress gateway with its resolved
// listeners and route tables.
type Gateway struct {
	Ref
	Class GatewayClass `json:"class"`
	// Identity is the SPIFFE ID the gateway's proxy serves as
	// (service account = gateway name, as in Istio).
	Identity string `json:"identity"`
	// WaypointFor (waypoints only): "service", "workload", "all" or "none",
	// from the ambit.dev/waypoint-for label; default "service".
	WaypointFor string     `json:"waypointFor,omitempty"`
	Listeners   []Listener `json:"listeners,omitempty"`
	// MeshRoutes (waypoints only) are the GAMMA route tables of the services
	// bound to this waypoint, sorted by service then port.
	MeshRoutes []ServiceRoutes `json:"meshRoutes,omitempty"`
	// Certificates are the contents of the Secrets the programmed
	// listeners' TLS settings reference, sorted by Namespace, Name. They
	// go to this gateway only, and never into a rendering of the model
	// (translate output, golden files): key material stays secret.
	Certificates []Certificate `json:"-"`
}

// Certificate is the content of a kubernetes.io/tls Secret. It may not
// parse: the gateway then keeps the last good certificate of that Secret
// (the listener's ResolvedRefs condition says why it is unusable).
type Certificate struct {
	Ref
	CertPEM []byte
	KeyPEM  []byte
}

// Listener is one Gateway listener with the routes attached to it.
type Listener struct {
	Name     string `json:"name"`
	Port     int32  `json:"port"`
	Protocol string `json:"protocol"` // HTTP, HTTPS, TLS, TCP, UDP, HBONE
	// Hostname restricts the listener; empty matches every host.
	Hostname string       `json:"hostname,omitempty"`
	TLS      *ListenerTLS `json:"tls,omitempty"`
	// VirtualHosts in match order: exact hostnames first, then wildcards
	// from the longest suffix, "*" last. For TLS listeners the hostname is
	// the SNI; TCP listeners have a single "*" host.
	VirtualHosts []VirtualHost `json:"virtualHosts,omitempty"`
}

// ListenerTLS says how a listener treats TLS.
type ListenerTLS struct {
	Mode string `json:"mode"` // Terminate or Passthrough
	// Certificates are the Secrets (kubernetes.io/tls) with the serving
	// certificates, in the order listed on the Gateway.
	Certificates []Ref `json:"certificates,omitempty"`
	// ClientValidation, on HTTPS listeners, asks clients for a certificate
	// (the Gateway's spec.tls.frontend for the listener's port).
	ClientValidation *ClientValidation `json:"clientValidation,omitempty"`
}

// ClientValidation is how an HTTPS listener checks client certificates.
type ClientValidation struct {
	// CAPEM are the CA certificates of the valid caCertificateRefs.
	CAPEM []byte `json:"caPEM"`
	// InsecureFallback (mode AllowInsecureFallback) admits clients without
	// a valid certificate too.
	InsecureFallback bool `json:"insecureFallback,omitempty"`
}

// ServiceRoutes is the route table a waypoint applies to traffic for one
// service (port), from routes whose parentRef is that Service (GAMMA).
type ServiceRoutes struct {
	Service Ref `json:"service"`
	// Port is the service port the routes apply to; 0 means every port.
	Port   int32   `json:"port,omitempty"`
	Routes []Route `json:"routes"`
}

// VirtualHost groups the routes that apply to one hostname.
type VirtualHost struct {
	Hostname string `json:"hostname"`
	// Routes in precedence order: the first that matches wins.
	Routes []Route `json:"routes"`
}

// Route is one (rule, match) pair of an xRoute, so that precedence can be
// applied per match as the Gateway API specifies.
type Route struct {
	Source RouteSource `json:"source"`
	Match  RouteMatch  `json:"match,omitzero"`
	// Filters at rule level, in the order written.
	Filters  []Filter  `json:"filters,omitempty"`
	Backends []Backend `json:"backends,omitempty"`
	Timeouts Timeouts  `json:"timeouts,omitzero"`
	Retry    *Retry    `json:"retry,omitempty"`
}

// RouteSource says where a route came from, for status, logs and metrics.
type RouteSource struct {
	Kind string `json:"kind"` // HTTPRoute, GRPCRoute, TLSRoute, TCPRoute
	Ref
	Rule     int    `json:"rule"`
	RuleName string `json:"ruleName,omitempty"`
	Match    int    `json:"match"`
}

// RouteMatch is an HTTP request match. GRPCRoute matches are compiled to
// it (POST /service/method) with GRPC set.
type RouteMatch struct {
	Path        *PathMatch    `json:"path,omitempty"`
	Headers     []StringMatch `json:"headers,omitempty"`
	QueryParams []StringMatch `json:"queryParams,omitempty"`
	Method      string        `json:"method,omitempty"`
	GRPC        bool          `json:"grpc,omitempty"`
}

// Match types, as named by the Gateway API.
const (
	MatchExact             = "Exact"
	MatchPathPrefix        = "PathPrefix"
	MatchRegularExpression = "RegularExpression"
)

// PathMatch matches the request path.
type PathMatch struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// StringMatch matches a named header or query parameter.
type StringMatch struct {
	Type  string `json:"type"`
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Backend is one weighted backendRef.
type Backend struct {
	// Service is the backend Service. Empty when the ref could not be
	// resolved; then Invalid says why and its share answers 500.
	Service Ref   `json:"service,omitzero"`
	Port    int32 `json:"port,omitempty"`
	Weight  int32 `json:"weight"`
	// Filters at backendRef level.
	Filters []Filter `json:"filters,omitempty"`
	Invalid string   `json:"invalid,omitempty"`
}

// Filter is one Gateway API filter; exactly one field besides Type is set.
type Filter struct {
	Type                   string          `json:"type"`
	RequestHeaderModifier  *HeaderModifier `json:"requestHeaderModifier,omitempty"`
	ResponseHeaderModifier *HeaderModifier `json:"responseHeaderModifier,omitempty"`
	RequestRedirect        *Redirect       `json:"requestRedirect,omitempty"`
	URLRewrite             *URLRewrite     `json:"urlRewrite,omitempty"`
	RequestMirror          *Mirror         `json:"requestMirror,omitempty"`
	CORS                   *CORS           `json:"cors,omitempty"`
}

// HeaderModifier sets, adds and removes headers.
type HeaderModifier struct {
	Set    []Header `json:"set,omitempty"`
	Add    []Header `json:"add,omitempty"`
	Remove []string `json:"remove,omitempty"`
}

// Header is a name and value.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// PathModifier rewrites a path.
type PathModifier struct {
	Type               string `json:"type"` // ReplaceFullPath or ReplacePrefixMatch
	ReplaceFullPath    string `json:"replaceFullPath,omitempty"`
	ReplacePrefixMatch string `json:"replacePrefixMatch,omitempty"`
}

// Redirect answers with a redirect instead of forwarding.
type Redirect struct {
	Scheme     string        `json:"scheme,omitempty"`
	Hostname   string        `json:"hostname,omitempty"`
	Port       int32         `json:"port,omitempty"`
	Path       *PathModifier `json:"path,omitempty"`
	StatusCode int           `json:"statusCode"`
}

// URLRewrite rewrites the request before forwarding.
type URLRewrite struct {
	Hostname string        `json:"hostname,omitempty"`
	Path     *PathModifier `json:"path,omitempty"`
}

// Mirror sends a copy of a share of requests to another backend.
type Mirror struct {
	Backend Backend `json:"backend"`
	// Numerator/Denominator is the share mirrored (100/100 when unset).
	Numerator   int32 `json:"numerator"`
	Denominator int32 `json:"denominator"`
}

// CORS is the Gateway API CORS filter.
type CORS struct {
	AllowOrigins     []string `json:"allowOrigins,omitempty"`
	AllowCredentials bool     `json:"allowCredentials,omitempty"`
	AllowMethods     []string `json:"allowMethods,omitempty"`
	AllowHeaders     []string `json:"allowHeaders,omitempty"`
	ExposeHeaders    []string `json:"exposeHeaders,omitempty"`
	MaxAge           int32    `json:"maxAge,omitempty"`
}

// Timeouts of a route rule; zero means none.
type Timeouts struct {
	Request        time.Duration `json:"request,omitempty"`
	BackendRequest time.Duration `json:"backendRequest,omitempty"`
}

// Retry of a route rule.
type Retry struct {
	Codes    []int         `json:"codes,omitempty"`
	Attempts int           `json:"attempts"`
	Backoff  time.Duration `json:"backoff,omitempty"`
}
