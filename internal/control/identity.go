package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/ambitmesh/ambit/internal/ca"
	"github.com/ambitmesh/ambit/internal/control/model"
	"github.com/ambitmesh/ambit/internal/identity"
)

// authIndex answers the CA's questions from one translation: which
// identities have a workload on which node, and which gateways exist.
type authIndex struct {
	nodeIdentities map[string]map[string]bool
	gateways       map[model.Ref]bool
}

func newAuthIndex(m *model.Mesh) *authIndex {
	idx := &authIndex{nodeIdentities: map[string]map[string]bool{}, gateways: map[model.Ref]bool{}}
	for i := range m.Workloads {
		w := &m.Workloads[i]
		if idx.nodeIdentities[w.Node] == nil {
			idx.nodeIdentities[w.Node] = map[string]bool{}
		}
		idx.nodeIdentities[w.Node][w.Identity] = true
	}
	for i := range m.Gateways {
		idx.gateways[m.Gateways[i].Ref] = true
	}
	return idx
}

// authorizer implements ca.Authorizer over the latest translation.
type authorizer Control

func (a *authorizer) NodeServes(node, spiffeID string) bool {
	idx := a.authz.Load()
	return idx != nil && idx.nodeIdentities[node][spiffeID]
}

func (a *authorizer) GatewayExists(namespace, name string) bool {
	idx := a.authz.Load()
	return idx != nil && idx.gateways[model.Ref{Namespace: namespace, Name: name}]
}

// serverNames splits the configured names into DNS names and IPs and adds
// the ones every installation needs.
func serverNames(extra []string) ([]string, []net.IP) {
	dns := []string{"localhost"}
	if h, err := os.Hostname(); err == nil && h != "" {
		dns = append(dns, h)
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	for _, n := range extra {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else if n != "" {
			dns = append(dns, n)
		}
	}
	return dns, ips
}

// TokenRequest asks the admin API for a join token.
type TokenRequest struct {
	// Subject is "node/<name>" or "gateway/<namespace>/<name>".
	Subject  string        `json:"subject"`
	TTL      time.Duration `json:"ttl,omitempty"`
	Reusable bool          `json:"reusable,omitempty"`
}

// TokenResponse is a new join token with what a proxy needs to use it.
type TokenResponse struct {
	Token     string    `json:"token"`
	Subject   string    `json:"subject"`
	ExpiresAt time.Time `json:"expiresAt"`
	Reusable  bool      `json:"reusable,omitempty"`
	// CAPin is the SHA-256 of the root's public key: the proxy checks it
	// before sending the token, so it cannot be phished.
	CAPin       string `json:"caPin"`
	TrustDomain string `json:"trustDomain"`
}

// CAStatus is the CA's state for `ambit ca status` and `ambit ca rotate`.
type CAStatus struct {
	TrustDomain string       `json:"trustDomain"`
	CAPin       string       `json:"caPin"`
	Generation  uint64       `json:"bundleGeneration"`
	Roots       []RootInfo   `json:"roots"`
	Rotation    RotationInfo `json:"rotation"`
}

// RotationInfo is where a root rotation stands.
type RotationInfo struct {
	// Phase is idle, prepared or activated.
	Phase string `json:"phase"`
	// Plugin: the CA uses plug-in certificates; rotate by replacing them.
	Plugin       bool      `json:"plugin,omitempty"`
	SigningPin   string    `json:"signingPin"`
	ActivatedAt  time.Time `json:"activatedAt,omitzero"`
	FinishableAt time.Time `json:"finishableAt,omitzero"`
}

// RootInfo describes one trusted root.
type RootInfo struct {
	Subject  string    `json:"subject"`
	Pin      string    `json:"pin"`
	NotAfter time.Time `json:"notAfter"`
}

func (c *Control) caStatus() CAStatus {
	b := c.ca.Bundle()
	rot := c.ca.Rotation()
	st := CAStatus{TrustDomain: b.TrustDomain.Name(), CAPin: c.ca.RootPin(), Generation: b.Generation,
		Rotation: RotationInfo{Phase: string(rot.Phase), Plugin: rot.Plugin, SigningPin: identity.SPKIPin(rot.Signing),
			ActivatedAt: rot.ActivatedAt, FinishableAt: rot.FinishableAt}}
	for _, r := range b.Roots {
		st.Roots = append(st.Roots, RootInfo{Subject: r.Subject.String(), Pin: identity.SPKIPin(r), NotAfter: r.NotAfter})
	}
	return st
}

// loopbackOnly guards admin endpoints that change the CA: they are for an
// operator on the control plane's host, never for the network.
func loopbackOnly(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			http.Error(w, "this endpoint only answers on loopback: run the command on the control plane's host", http.StatusForbidden)
			return
		}
		next(w, r)
	}
}

func (c *Control) handleCreateToken(w http.ResponseWriter, r *http.Request) {
	var req TokenRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		http.Error(w, "bad token request: "+err.Error(), http.StatusBadRequest)
		return
	}
	subj, err := ca.ParseSubject(req.Subject)
	if err != nil {
		http.Error(w, fmt.Sprintf("subject %q: %v (use node/<name> or gateway/<namespace>/<name>)", req.Subject, err), http.StatusBadRequest)
		return
	}
	tok, info, err := c.tokens.Create(subj, ca.TokenOptions{TTL: req.TTL, Reusable: req.Reusable})
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.log.Info("join token created", "subject", subj.String(), "id", info.ID, "expires", info.ExpiresAt, "reusable", info.Reusable)
	writeJSON(w, TokenResponse{Token: tok, Subject: subj.String(), ExpiresAt: info.ExpiresAt, Reusable: info.Reusable,
		CAPin: c.ca.RootPin(), TrustDomain: c.ca.TrustDomain().Name()})
}

func (c *Control) handleRotate(w http.ResponseWriter, r *http.Request) {
	var err error
	switch phase := r.PathValue("phase"); phase {
	case "prepare":
		err = c.ca.PrepareRotation()
	case "activate":
		err = c.ca.ActivateRotation()
	case "finish":
		err = c.ca.FinishRotation(r.URL.Query().Get("force") == "true")
	case "abort":
		err = c.ca.AbortRotation()
	default:
		http.Error(w, fmt.Sprintf("unknown rotation phase %q: use prepare, activate, finish or abort", phase), http.StatusNotFound)
		return
	}
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, ca.ErrRotation) {
			code = http.StatusConflict
		}
		http.Error(w, err.Error(), code)
		return
	}
	c.log.Info("root rotation step done", "phase", r.PathValue("phase"), "rotation", c.ca.Rotation().Phase)
	writeJSON(w, c.caStatus())
}
