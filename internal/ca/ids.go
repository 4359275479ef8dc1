package ca

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambitmesh/ambit/internal/identity"
)

// ErrBadSubject is wrapped by errors about malformed subjects and identities.
var ErrBadSubject = errors.New("invalid subject")

// SubjectKind says what kind of proxy a Subject is.
type SubjectKind string

const (
	// KindNode is a node proxy: identity spiffe://<td>/ambit/node/<node>,
	// xDS node ID "node/<node>".
	KindNode SubjectKind = "node"
	// KindGateway is a waypoint or gateway proxy. It uses the workload
	// identity of its own service account, which is named after the Gateway:
	// spiffe://<td>/ns/<namespace>/sa/<name>, xDS node ID
	// "gateway/<namespace>/<name>".
	KindGateway SubjectKind = "gateway"
)

// Subject is a proxy a join token or a client certificate stands for.
type Subject struct {
	Kind SubjectKind `json:"kind"`
	// Node is set for KindNode.
	Node string `json:"node,omitempty"`
	// Namespace and Name are set for KindGateway.
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
}

// NodeSubject is the node proxy of node.
func NodeSubject(node string) Subject { return Subject{Kind: KindNode, Node: node} }

// GatewaySubject is the waypoint/gateway namespace/name.
func GatewaySubject(namespace, name string) Subject {
	return Subject{Kind: KindGateway, Namespace: namespace, Name: name}
}

// String is the xDS node ID of the subject: "node/<node>" or
// "gateway/<namespace>/<name>".
func (s Subject) String() string {
	if s.Kind == KindGateway {
		return "gateway/" + s.Namespace + "/" + s.Name
	}
	return "node/" + s.Node
}

// dnsLabelish accepts Kubernetes object names (DNS-1123 subdomains), which
// are also valid SPIFFE path segments: 1-253 of a-z, 0-9, '-' and '.',
// starting and ending with a letter or digit. A loop rather than a
// package-level regexp: the regexp's 251-fold repetition compiled to a
// 168 KB program at init in every ambit command, node proxy included.
func dnsLabelish(v string) bool {
	if len(v) == 0 || len(v) > 253 {
		return false
	}
	for i := range len(v) {
		c := v[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && ((c != '-' && c != '.') || i == 0 || i == len(v)-1) {
			return false
		}
	}
	return true
}

func validName(field, v string) error {
	if !dnsLabelish(v) {
		return fmt.Errorf("ca: %s %q: %w: want a lowercase DNS-1123 name (a-z, 0-9, '-', '.'; at most 253 characters)", field, v, ErrBadSubject)
	}
	return nil
}

// Validate checks the names of s.
func (s Subject) Validate() error {
	switch s.Kind {
	case KindNode:
		return validName("node name", s.Node)
	case KindGateway:
		return errors.Join(validName("gateway namespace", s.Namespace), validName("gateway name", s.Name))
	default:
		return fmt.Errorf("ca: subject kind %q: %w: want %q or %q", s.Kind, ErrBadSubject, KindNode, KindGateway)
	}
}

// ParseSubject parses "node/<node>", "gateway/<namespace>/<name>", or the
// shorthands "<node>" and "<namespace>/<name>" (node names contain no '/').
func ParseSubject(v string) (Subject, error) {
	var s Subject
	parts := strings.Split(v, "/")
	switch {
	case len(parts) == 2 && parts[0] == "node":
		s = NodeSubject(parts[1])
	case len(parts) == 3 && parts[0] == "gateway":
		s = GatewaySubject(parts[1], parts[2])
	case len(parts) == 1:
		s = NodeSubject(parts[0])
	case len(parts) == 2:
		s = GatewaySubject(parts[0], parts[1])
	default:
		return Subject{}, fmt.Errorf("ca: subject %q: %w: want node/<node>, gateway/<namespace>/<name>, <node> or <namespace>/<name>", v, ErrBadSubject)
	}
	if err := s.Validate(); err != nil {
		return Subject{}, err
	}
	return s, nil
}

// ID is the SPIFFE ID of s in trust domain td.
func (s Subject) ID(td spiffeid.TrustDomain) (spiffeid.ID, error) {
	if err := s.Validate(); err != nil {
		return spiffeid.ID{}, err
	}
	var id spiffeid.ID
	var err error
	if s.Kind == KindGateway {
		id, err = identity.WorkloadID(td, s.Namespace, s.Name)
	} else {
		id, err = identity.NodeID(td, s.Node)
	}
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("ca: %w: %w", ErrBadSubject, err)
	}
	return id, nil
}

// IdentityKind classifies the SPIFFE IDs ambit issues.
type IdentityKind int

const (
	IdentityOther    IdentityKind = iota // anything else: never issued
	IdentityWorkload                     // /ns/<ns>/sa/<sa>
	IdentityNode                         // /ambit/node/<node>
	IdentityControl                      // /ambit/control
)

// ParsedID is a SPIFFE ID split into ambit's parts.
type ParsedID struct {
	Kind IdentityKind
	// Node for IdentityNode; Namespace and ServiceAccount for IdentityWorkload.
	Node, Namespace, ServiceAccount string
}

// ParseID splits id's path; IdentityOther for paths ambit does not issue.
func ParseID(id spiffeid.ID) ParsedID {
	seg := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	switch {
	case len(seg) == 4 && seg[0] == "ns" && seg[2] == "sa" && validName("", seg[1]) == nil && validName("", seg[3]) == nil:
		return ParsedID{Kind: IdentityWorkload, Namespace: seg[1], ServiceAccount: seg[3]}
	case len(seg) == 3 && seg[0] == "ambit" && seg[1] == "node" && validName("", seg[2]) == nil:
		return ParsedID{Kind: IdentityNode, Node: seg[2]}
	case len(seg) == 2 && seg[0] == "ambit" && seg[1] == "control":
		return ParsedID{Kind: IdentityControl}
	}
	return ParsedID{Kind: IdentityOther}
}
