// Package model is the mesh model: plain Go data that the translator
// produces from resources and the xDS layer turns into per-proxy views.
// Everything here is immutable once built and sorted deterministically, so
// two translations of the same resources are deep-equal.
package model

import (
	"net/netip"
	"time"
)

// Mesh is the whole translated mesh.
type Mesh struct {
	TrustDomain   string   `json:"trustDomain"`
	RootNamespace string   `json:"rootNamespace"`
	ClusterDomain string   `json:"clusterDomain"`
	MTLSMode      MTLSMode `json:"mtlsMode"`

	// Workloads sorted by Namespace, Name.
	Workloads []Workload `json:"workloads,omitempty"`
	// Services sorted by Namespace, Name.
	Services []Service `json:"services,omitempty"`
	// Gateways (waypoints and ingress gateways) sorted by Namespace, Name.
	Gateways []Gateway `json:"gateways,omitempty"`
	// Policies sorted by Namespace, Name.
	Policies []Policy `json:"policies,omitempty"`

	// TrustBundle is the set of roots proxies trust. The CA, not the
	// translator, fills it in (translation has no roots to offer).
	TrustBundle *TrustBundle `json:"trustBundle,omitempty"`
}

// TrustBundle holds the mesh's root certificates; two during a rotation.
type TrustBundle struct {
	TrustDomain string   `json:"trustDomain"`
	Generation  uint64   `json:"generation"`
	RootsPEM    [][]byte `json:"rootsPEM"`
}

// MTLSMode is STRICT or PERMISSIVE.
type MTLSMode string

const (
	MTLSStrict     MTLSMode = "STRICT"
	MTLSPermissive MTLSMode = "PERMISSIVE"
)

// Ref names a namespaced object.
type Ref struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func (r Ref) String() string { return r.Namespace + "/" + r.Name }

// IsZero reports whether r names nothing.
func (r Ref) IsZero() bool { return r.Name == "" }

// Locality is a workload's failure domain.
type Locality struct {
	Region  string `json:"region,omitempty"`
	Zone    string `json:"zone,omitempty"`
	Subzone string `json:"subzone,omitempty"`
}

// Workload is one addressable member of the mesh (a Workload object today,
// a pod once the Kubernetes source lands).
type Workload struct {
	Ref
	// UID distinguishes re-created objects with the same name.
	UID            string            `json:"uid,omitempty"`
	ServiceAccount string            `json:"serviceAccount"`
	Identity       string            `json:"identity"` // spiffe://td/ns/<ns>/sa/<sa>
	Addresses      []netip.Addr      `json:"addresses"`
	Node           string            `json:"node"`
	Network        string            `json:"network,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	Locality       Locality          `json:"locality,omitzero"`
	// Ports maps named ports to numbers (for named Service targetPorts).
	Ports map[string]int32 `json:"ports,omitempty"`
	// Waypoint, when set, is the waypoint that traffic addressed directly
	// to this workload must traverse.
	Waypoint *WaypointBinding `json:"waypoint,omitempty"`
}

// WaypointBinding says which waypoint serves a service or workload and
// from which label the binding came.
type WaypointBinding struct {
	Gateway Ref `json:"gateway"`
	// From is "namespace", "service" or "workload": where the label was.
	From string `json:"from"`
}

// Service is a set of workloads behind stable virtual IPs.
type Service struct {
	Ref
	// Hostname is <name>.<namespace>.svc.<cluster domain>.
	Hostname  string            `json:"hostname"`
	VIPs      []netip.Addr      `json:"vips,omitempty"`
	Ports     []ServicePort     `json:"ports,omitempty"`
	Selector  map[string]string `json:"selector,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Endpoints []Endpoint        `json:"endpoints,omitempty"`
	// Waypoint, when set, is the waypoint all traffic to this service's
	// VIPs traverses.
	Waypoint *WaypointBinding `json:"waypoint,omitempty"`
	// LoadBalancer is the service's load balancing policy at waypoints and
	// gateways; nil is least request.
	LoadBalancer *LoadBalancer `json:"loadBalancer,omitempty"`
	// TLS are the BackendTLSPolicy settings of the service's ports, by
	// port: waypoints and gateways originate TLS to the endpoints of those
	// ports that they do not reach over HBONE.
	TLS []BackendTLS `json:"tls,omitempty"`
}

// BackendTLS is how a proxy originates TLS to one service port.
type BackendTLS struct {
	Port int32 `json:"port"`
	// Policy is the BackendTLSPolicy it comes from.
	Policy Ref `json:"policy"`
	// SNI is validation.hostname: the server name sent, and the name the
	// certificate must hold when SubjectAltNames is empty.
	SNI string `json:"sni"`
	// CAPEM are the trusted CA certificates; SystemRoots uses the host's
	// instead. Neither (every CA reference invalid) fails every connection.
	CAPEM       []byte `json:"caPEM,omitempty"`
	SystemRoots bool   `json:"systemRoots,omitempty"`
	// SubjectAltNames, when set, replace SNI for verification: the
	// certificate must hold one of them.
	SubjectAltNames []SubjectAltName `json:"subjectAltNames,omitempty"`
}

// SubjectAltName is a DNS name or a URI (one of the two is set).
type SubjectAltName struct {
	Hostname string `json:"hostname,omitempty"`
	URI      string `json:"uri,omitempty"`
}

// LoadBalancer is a service's L7 load balancing policy.
type LoadBalancer struct {
	// Policy is LBLeastRequest, LBRoundRobin, LBRandom or LBConsistentHash.
	Policy string `json:"policy"`
	// Hash is the key of LBConsistentHash.
	Hash *HashKey `json:"hash,omitempty"`
}

// Load balancing policies.
const (
	LBLeastRequest   = "LeastRequest"
	LBRoundRobin     = "RoundRobin"
	LBRandom         = "Random"
	LBConsistentHash = "ConsistentHash"
)

// HashKey is where a consistent hash takes its key: exactly one of Header,
// Cookie or SourceIP.
type HashKey struct {
	Header string `json:"header,omitempty"`
	Cookie string `json:"cookie,omitempty"`
	// CookieTTL, when non-zero, makes the proxy generate the cookie for
	// clients without one (Envoy's behaviour); CookiePath is its Path.
	CookieTTL  time.Duration `json:"cookieTTL,omitempty"`
	CookiePath string        `json:"cookiePath,omitempty"`
	SourceIP   bool          `json:"sourceIP,omitempty"`
}

// ServicePort is one port of a service.
type ServicePort struct {
	Name        string `json:"name,omitempty"`
	Port        int32  `json:"port"`
	Protocol    string `json:"protocol"` // TCP, UDP, SCTP
	AppProtocol string `json:"appProtocol,omitempty"`
	// TargetPort is the numeric target, or 0 when TargetPortName must be
	// resolved per workload (see Endpoint.Ports).
	TargetPort     int32  `json:"targetPort,omitempty"`
	TargetPortName string `json:"targetPortName,omitempty"`
}

// Endpoint is a workload behind a service, with service ports resolved to
// the workload's target ports.
type Endpoint struct {
	Workload  Ref          `json:"workload"`
	Addresses []netip.Addr `json:"addresses"`
	Node      string       `json:"node"`
	Network   string       `json:"network,omitempty"`
	Identity  string       `json:"identity"`
	Locality  Locality     `json:"locality,omitzero"`
	// Ports maps service port -> target port on this workload. A service
	// port whose named target the workload does not define is absent.
	Ports []PortMapping `json:"ports"`
	// Labels are the workload's labels (for the proxies' telemetry).
	Labels map[string]string `json:"labels,omitempty"`
}

// PortMapping maps a service port to a workload port.
type PortMapping struct {
	ServicePort int32 `json:"servicePort"`
	TargetPort  int32 `json:"targetPort"`
}
