package telemetry

import (
	workloadv1 "github.com/ambitmesh/ambit/proto/ambit/workload/v1"
)

// Label values with a fixed vocabulary (ztunnel's).
const (
	// Reporter: which end's proxy reports.
	ReporterSource      = "source"
	ReporterDestination = "destination"

	// ProtocolTCP is request_protocol for every connection a node proxy
	// handles (it does not parse HTTP).
	ProtocolTCP = "tcp"

	// Response flags.
	FlagNone = "-"
	// FlagDenied: refused by an authorization policy.
	FlagDenied = "DENY"
	// FlagConnectFailure: the upstream connection could not be made.
	FlagConnectFailure = "CONNECT"
	// FlagIdleTimeout: closed after no byte moved either way for the
	// idle timeout (Envoy's SI, stream idle timeout; its TCP proxy sets
	// no flag for its idle_timeout).
	FlagIdleTimeout = "SI"

	// Connection security policies. Istio reports mutual_tls for HBONE
	// and none for plaintext at the destination; unknown when the
	// reporter cannot tell.
	SecurityMutualTLS = "mutual_tls"
	SecurityNone      = "none"
	SecurityUnknown   = "unknown"

	// Unknown is the value of a label whose value is not known, as in
	// Istio.
	Unknown = "unknown"
)

// Peer is one end of a connection as the labels describe it. Empty fields
// are reported as "unknown".
type Peer struct {
	Workload          string
	Namespace         string
	Principal         string // SPIFFE ID, "spiffe://<td>/ns/<ns>/sa/<sa>"
	App               string
	Version           string
	CanonicalService  string
	CanonicalRevision string
	Cluster           string
}

// Service is the destination service, when the connection was addressed to
// one.
type Service struct {
	Hostname  string // <name>.<namespace>.svc.<domain>
	Name      string
	Namespace string
}

// Labels is the full label set of one connection.
type Labels struct {
	Reporter        string
	Source          Peer
	Destination     Peer
	Service         Service
	RequestProtocol string // "" is ProtocolTCP
	// ResponseFlags is set by Finish; the value given to Open is ignored,
	// so the byte counters of a connection keep one series whatever its
	// outcome, as in ztunnel.
	ResponseFlags  string
	SecurityPolicy string
}

// Labels Istio derives a canonical service and revision from, in order of
// preference.
var (
	canonicalNameLabels     = []string{"service.istio.io/canonical-name", "app.kubernetes.io/name", "app"}
	canonicalRevisionLabels = []string{"service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"}
)

// PeerFromWorkload describes a workload the way ztunnel does: app and
// version are the canonical service and revision (from the
// service.istio.io/canonical-*, app.kubernetes.io/* or app/version labels;
// the workload name and "latest" otherwise). Principal is the workload's
// declared identity; for the source at the destination, replace it with
// the identity the peer proved in mTLS ("" for plaintext).
func PeerFromWorkload(w *workloadv1.Workload, cluster string) Peer {
	if w == nil {
		return Peer{Cluster: cluster}
	}
	return PeerFromLabels(w.GetName(), w.GetNamespace(), w.GetIdentity(), w.GetLabels(), cluster)
}

// PeerFromLabels is PeerFromWorkload for a workload known by its name,
// namespace, identity and labels (a gateway's backend endpoint).
func PeerFromLabels(workload, namespace, principal string, labels map[string]string, cluster string) Peer {
	name := firstLabel(labels, canonicalNameLabels, workload)
	rev := firstLabel(labels, canonicalRevisionLabels, "latest")
	return Peer{
		Workload:          workload,
		Namespace:         namespace,
		Principal:         principal,
		App:               name,
		Version:           rev,
		CanonicalService:  name,
		CanonicalRevision: rev,
		Cluster:           cluster,
	}
}

// ServiceFromProto describes a destination service.
func ServiceFromProto(s *workloadv1.Service) Service {
	if s == nil {
		return Service{}
	}
	return Service{Hostname: s.GetHostname(), Name: s.GetName(), Namespace: s.GetNamespace()}
}

func firstLabel(labels map[string]string, keys []string, fallback string) string {
	for _, k := range keys {
		if v := labels[k]; v != "" {
			return v
		}
	}
	return fallback
}

func orUnknown(s string) string {
	if s == "" {
		return Unknown
	}
	return s
}

// values are the label values in labelNames order.
func (l *Labels) values(flags string) []string {
	v := make([]string, len(labelNames))
	l.fill(v, flags)
	return v
}

// fill writes the label values in labelNames order into dst, which is
// len(labelNames) long (the request metrics fill an array, allocation
// free).
func (l *Labels) fill(dst []string, flags string) {
	proto := l.RequestProtocol
	if proto == "" {
		proto = ProtocolTCP
	}
	if flags == "" {
		flags = FlagNone
	}
	s, d := &l.Source, &l.Destination
	v := [...]string{
		orUnknown(l.Reporter),
		orUnknown(s.Workload),
		orUnknown(s.CanonicalService),
		orUnknown(s.CanonicalRevision),
		orUnknown(s.Namespace),
		orUnknown(s.Principal),
		orUnknown(s.App),
		orUnknown(s.Version),
		orUnknown(s.Cluster),
		orUnknown(l.Service.Hostname),
		orUnknown(l.Service.Namespace),
		orUnknown(l.Service.Name),
		orUnknown(d.Workload),
		orUnknown(d.CanonicalService),
		orUnknown(d.CanonicalRevision),
		orUnknown(d.Namespace),
		orUnknown(d.Principal),
		orUnknown(d.App),
		orUnknown(d.Version),
		orUnknown(d.Cluster),
		proto,
		flags,
		orUnknown(l.SecurityPolicy),
	}
	copy(dst, v[:])
}
