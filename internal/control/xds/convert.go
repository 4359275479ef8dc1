package xds

import (
	"fmt"
	"net/netip"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ambitmesh/ambit/internal/control/model"
	authzv1 "github.com/ambitmesh/ambit/proto/ambit/authorization/v1"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
	workloadv1 "github.com/ambitmesh/ambit/proto/ambit/workload/v1"
)

// The conversions below are total for any model the translator validated;
// the errors exist so that a translator bug drops one resource (and says
// which field was wrong) instead of crashing the control plane.

func addrBytes(addrs []netip.Addr) [][]byte {
	if len(addrs) == 0 {
		return nil
	}
	out := make([][]byte, len(addrs))
	for i, a := range addrs {
		out[i] = a.AsSlice()
	}
	return out
}

func localityProto(l model.Locality) *workloadv1.Locality {
	if l == (model.Locality{}) {
		return nil
	}
	return &workloadv1.Locality{Region: l.Region, Zone: l.Zone, Subzone: l.Subzone}
}

func waypointProto(w *model.WaypointBinding) *workloadv1.WaypointBinding {
	if w == nil {
		return nil
	}
	return &workloadv1.WaypointBinding{Namespace: w.Gateway.Namespace, Name: w.Gateway.Name, From: w.From}
}

func loadBalancerProto(lb *model.LoadBalancer) *gatewayv1.LoadBalancer {
	if lb == nil {
		return nil
	}
	out := &gatewayv1.LoadBalancer{Policy: lb.Policy}
	if h := lb.Hash; h != nil {
		out.Hash = &gatewayv1.HashKey{Header: h.Header, Cookie: h.Cookie, CookieTtl: durationProto(h.CookieTTL), CookiePath: h.CookiePath, SourceIp: h.SourceIP}
	}
	return out
}

func backendTLSProto(ts []model.BackendTLS) []*gatewayv1.BackendTLS {
	if len(ts) == 0 {
		return nil
	}
	out := make([]*gatewayv1.BackendTLS, len(ts))
	for i, t := range ts {
		p := &gatewayv1.BackendTLS{
			Port:        uint32(t.Port),
			Policy:      &gatewayv1.ObjectRef{Namespace: t.Policy.Namespace, Name: t.Policy.Name},
			Sni:         t.SNI,
			CaPem:       t.CAPEM,
			SystemRoots: t.SystemRoots,
		}
		for _, san := range t.SubjectAltNames {
			p.SubjectAltNames = append(p.SubjectAltNames, &gatewayv1.SubjectAltName{Hostname: san.Hostname, Uri: san.URI})
		}
		out[i] = p
	}
	return out
}

func portMappings(ps []model.PortMapping) []*workloadv1.PortMapping {
	out := make([]*workloadv1.PortMapping, len(ps))
	for i, p := range ps {
		out[i] = &workloadv1.PortMapping{ServicePort: uint32(p.ServicePort), TargetPort: uint32(p.TargetPort)}
	}
	return out
}

func servicePorts(ps []model.ServicePort) []*workloadv1.ServicePort {
	out := make([]*workloadv1.ServicePort, len(ps))
	for i, p := range ps {
		out[i] = &workloadv1.ServicePort{
			Name:           p.Name,
			Port:           uint32(p.Port),
			Protocol:       p.Protocol,
			AppProtocol:    p.AppProtocol,
			TargetPort:     uint32(p.TargetPort),
			TargetPortName: p.TargetPortName,
		}
	}
	return out
}

// workloadProto converts a workload; services holds the port lists of the
// services it backs, keyed "ns/name".
func workloadProto(w *model.Workload, services map[string]*workloadv1.PortList) *workloadv1.Workload {
	return &workloadv1.Workload{
		Namespace:      w.Namespace,
		Name:           w.Name,
		Uid:            w.UID,
		ServiceAccount: w.ServiceAccount,
		Identity:       w.Identity,
		Addresses:      addrBytes(w.Addresses),
		Node:           w.Node,
		Network:        w.Network,
		Locality:       localityProto(w.Locality),
		Waypoint:       waypointProto(w.Waypoint),
		Services:       services,
		Labels:         w.Labels,
	}
}

func serviceProto(s *model.Service) *workloadv1.Service {
	return &workloadv1.Service{
		Namespace: s.Namespace,
		Name:      s.Name,
		Hostname:  s.Hostname,
		Vips:      addrBytes(s.VIPs),
		Ports:     servicePorts(s.Ports),
		Waypoint:  waypointProto(s.Waypoint),
	}
}

func backendProto(s *model.Service) *gatewayv1.Backend {
	b := &gatewayv1.Backend{
		Namespace:    s.Namespace,
		Name:         s.Name,
		Hostname:     s.Hostname,
		Vips:         addrBytes(s.VIPs),
		Ports:        servicePorts(s.Ports),
		Waypoint:     waypointProto(s.Waypoint),
		LoadBalancer: loadBalancerProto(s.LoadBalancer),
		Tls:          backendTLSProto(s.TLS),
	}
	b.Endpoints = make([]*gatewayv1.Endpoint, len(s.Endpoints))
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		b.Endpoints[i] = &gatewayv1.Endpoint{
			Workload:  &gatewayv1.ObjectRef{Namespace: e.Workload.Namespace, Name: e.Workload.Name},
			Addresses: addrBytes(e.Addresses),
			Node:      e.Node,
			Network:   e.Network,
			Identity:  e.Identity,
			Locality:  localityProto(e.Locality),
			Ports:     portMappings(e.Ports),
			Labels:    e.Labels,
		}
	}
	return b
}

var policyActions = map[string]authzv1.Action{
	"ALLOW": authzv1.Action_ACTION_ALLOW,
	"DENY":  authzv1.Action_ACTION_DENY,
	"AUDIT": authzv1.Action_ACTION_AUDIT,
}

var policyScopes = map[model.PolicyScope]authzv1.Scope{
	model.ScopeMesh:      authzv1.Scope_SCOPE_MESH,
	model.ScopeNamespace: authzv1.Scope_SCOPE_NAMESPACE,
	model.ScopeWorkloads: authzv1.Scope_SCOPE_WORKLOADS,
	model.ScopeTargets:   authzv1.Scope_SCOPE_TARGETS,
}

func prefixes(ps []netip.Prefix) []*authzv1.Prefix {
	if len(ps) == 0 {
		return nil
	}
	out := make([]*authzv1.Prefix, len(ps))
	for i, p := range ps {
		out[i] = &authzv1.Prefix{Address: p.Addr().AsSlice(), Length: uint32(p.Bits())}
	}
	return out
}

func ports32(ps []int32) []uint32 {
	if len(ps) == 0 {
		return nil
	}
	out := make([]uint32, len(ps))
	for i, p := range ps {
		out[i] = uint32(p)
	}
	return out
}

func authorizationProto(p *model.Policy) (*authzv1.Authorization, error) {
	action, ok := policyActions[p.Action]
	if !ok {
		return nil, fmt.Errorf("AuthorizationPolicy %s: action %q: want ALLOW, DENY or AUDIT", p.Ref, p.Action)
	}
	scope, ok := policyScopes[p.Scope]
	if !ok {
		return nil, fmt.Errorf("AuthorizationPolicy %s: scope %q: want Mesh, Namespace, Workloads or Targets", p.Ref, p.Scope)
	}
	a := &authzv1.Authorization{
		Namespace:     p.Namespace,
		Name:          p.Name,
		Action:        action,
		Scope:         scope,
		Selector:      p.Selector,
		NeedsWaypoint: p.NeedsWaypoint,
	}
	for _, w := range p.Workloads {
		a.Workloads = append(a.Workloads, w.String())
	}
	for _, t := range p.Targets {
		a.Targets = append(a.Targets, &authzv1.Target{Kind: t.Kind, Namespace: t.Namespace, Name: t.Name})
	}
	for _, r := range p.Rules {
		rule := &authzv1.Rule{Invalid: r.Invalid}
		for _, f := range r.From {
			rule.From = append(rule.From, &authzv1.Source{
				Principals:    f.Principals,
				NotPrincipals: f.NotPrincipals,
				Namespaces:    f.Namespaces,
				NotNamespaces: f.NotNamespaces,
				IpBlocks:      prefixes(f.IPBlocks),
				NotIpBlocks:   prefixes(f.NotIPBlocks),
			})
		}
		for _, o := range r.To {
			rule.To = append(rule.To, &authzv1.Operation{
				Ports:      ports32(o.Ports),
				NotPorts:   ports32(o.NotPorts),
				Methods:    o.Methods,
				NotMethods: o.NotMethods,
				Paths:      o.Paths,
				NotPaths:   o.NotPaths,
				Hosts:      o.Hosts,
				NotHosts:   o.NotHosts,
			})
		}
		for _, c := range r.When {
			rule.When = append(rule.When, &authzv1.Condition{Key: c.Key, Values: c.Values, NotValues: c.NotValues})
		}
		a.Rules = append(a.Rules, rule)
	}
	return a, nil
}

func gatewayInfo(g *model.Gateway) *gatewayv1.Gateway {
	return &gatewayv1.Gateway{
		Namespace:   g.Namespace,
		Name:        g.Name,
		Class:       string(g.Class),
		Identity:    g.Identity,
		WaypointFor: g.WaypointFor,
	}
}

func listenerProto(g *model.Gateway, l *model.Listener) (*gatewayv1.Listener, error) {
	out := &gatewayv1.Listener{
		Gateway:  gatewayInfo(g),
		Name:     l.Name,
		Port:     uint32(l.Port),
		Protocol: l.Protocol,
		Hostname: l.Hostname,
	}
	if l.TLS != nil {
		tls := &gatewayv1.ListenerTLS{Mode: l.TLS.Mode}
		for _, c := range l.TLS.Certificates {
			tls.Certificates = append(tls.Certificates, &gatewayv1.ObjectRef{Namespace: c.Namespace, Name: c.Name})
		}
		if v := l.TLS.ClientValidation; v != nil {
			tls.ClientValidation = &gatewayv1.ClientValidation{CaPem: v.CAPEM, InsecureFallback: v.InsecureFallback}
		}
		out.Tls = tls
	}
	for _, vh := range l.VirtualHosts {
		routes, err := routesProto(vh.Routes)
		if err != nil {
			return nil, fmt.Errorf("Gateway %s listener %q host %q: %w", g.Ref, l.Name, vh.Hostname, err)
		}
		out.VirtualHosts = append(out.VirtualHosts, &gatewayv1.VirtualHost{Hostname: vh.Hostname, Routes: routes})
	}
	return out, nil
}

func routeTableProto(g *model.Gateway, sr *model.ServiceRoutes) (*gatewayv1.RouteTable, error) {
	routes, err := routesProto(sr.Routes)
	if err != nil {
		return nil, fmt.Errorf("Gateway %s routes of Service %s: %w", g.Ref, sr.Service, err)
	}
	return &gatewayv1.RouteTable{
		Gateway: gatewayInfo(g),
		Service: &gatewayv1.ObjectRef{Namespace: sr.Service.Namespace, Name: sr.Service.Name},
		Port:    uint32(sr.Port),
		Routes:  routes,
	}, nil
}

// routeTableName is the RouteTable resource name of sr.
func routeTableName(sr *model.ServiceRoutes) string {
	if sr.Port == 0 {
		return sr.Service.String()
	}
	return fmt.Sprintf("%s:%d", sr.Service, sr.Port)
}

var matchTypes = map[string]gatewayv1.MatchType{
	model.MatchExact:             gatewayv1.MatchType_MATCH_TYPE_EXACT,
	model.MatchPathPrefix:        gatewayv1.MatchType_MATCH_TYPE_PATH_PREFIX,
	model.MatchRegularExpression: gatewayv1.MatchType_MATCH_TYPE_REGULAR_EXPRESSION,
}

func matchType(field, t string) (gatewayv1.MatchType, error) {
	mt, ok := matchTypes[t]
	if !ok {
		return 0, fmt.Errorf("%s type %q: want Exact, PathPrefix or RegularExpression", field, t)
	}
	return mt, nil
}

func stringMatches(field string, ms []model.StringMatch) ([]*gatewayv1.StringMatch, error) {
	var out []*gatewayv1.StringMatch
	for _, m := range ms {
		t, err := matchType(field, m.Type)
		if err != nil {
			return nil, err
		}
		out = append(out, &gatewayv1.StringMatch{Type: t, Name: m.Name, Value: m.Value})
	}
	return out, nil
}

func durationProto(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

func routesProto(rs []model.Route) ([]*gatewayv1.Route, error) {
	out := make([]*gatewayv1.Route, 0, len(rs))
	for i := range rs {
		r, err := routeProto(&rs[i])
		if err != nil {
			return nil, fmt.Errorf("%s %s rule %d match %d: %w", rs[i].Source.Kind, rs[i].Source.Ref, rs[i].Source.Rule, rs[i].Source.Match, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func routeProto(r *model.Route) (*gatewayv1.Route, error) {
	out := &gatewayv1.Route{
		Source: &gatewayv1.RouteSource{
			Kind:      r.Source.Kind,
			Namespace: r.Source.Namespace,
			Name:      r.Source.Name,
			Rule:      uint32(r.Source.Rule),
			RuleName:  r.Source.RuleName,
			Match:     uint32(r.Source.Match),
		},
		Match: &gatewayv1.RouteMatch{Method: r.Match.Method, Grpc: r.Match.GRPC},
	}
	if p := r.Match.Path; p != nil {
		t, err := matchType("path", p.Type)
		if err != nil {
			return nil, err
		}
		out.Match.Path = &gatewayv1.PathMatch{Type: t, Value: p.Value}
	}
	var err error
	if out.Match.Headers, err = stringMatches("header", r.Match.Headers); err != nil {
		return nil, err
	}
	if out.Match.QueryParams, err = stringMatches("queryParam", r.Match.QueryParams); err != nil {
		return nil, err
	}
	if out.Filters, err = filtersProto(r.Filters); err != nil {
		return nil, err
	}
	for i := range r.Backends {
		b, err := backendRefProto(&r.Backends[i])
		if err != nil {
			return nil, fmt.Errorf("backendRef %d: %w", i, err)
		}
		out.Backends = append(out.Backends, b)
	}
	if r.Timeouts != (model.Timeouts{}) {
		out.Timeouts = &gatewayv1.Timeouts{
			Request:        durationProto(r.Timeouts.Request),
			BackendRequest: durationProto(r.Timeouts.BackendRequest),
		}
	}
	if r.Retry != nil {
		out.Retry = &gatewayv1.Retry{Attempts: uint32(r.Retry.Attempts), Backoff: durationProto(r.Retry.Backoff)}
		for _, c := range r.Retry.Codes {
			out.Retry.Codes = append(out.Retry.Codes, uint32(c))
		}
	}
	return out, nil
}

func backendRefProto(b *model.Backend) (*gatewayv1.BackendRef, error) {
	out := &gatewayv1.BackendRef{Port: uint32(b.Port), Weight: uint32(b.Weight), Invalid: b.Invalid}
	if !b.Service.IsZero() {
		out.Service = b.Service.String()
	}
	var err error
	if out.Filters, err = filtersProto(b.Filters); err != nil {
		return nil, err
	}
	return out, nil
}

func pathModifier(p *model.PathModifier) (*gatewayv1.PathModifier, error) {
	if p == nil {
		return nil, nil
	}
	switch p.Type {
	case "ReplaceFullPath":
		return &gatewayv1.PathModifier{Kind: &gatewayv1.PathModifier_ReplaceFullPath{ReplaceFullPath: p.ReplaceFullPath}}, nil
	case "ReplacePrefixMatch":
		return &gatewayv1.PathModifier{Kind: &gatewayv1.PathModifier_ReplacePrefixMatch{ReplacePrefixMatch: p.ReplacePrefixMatch}}, nil
	}
	return nil, fmt.Errorf("path modifier type %q: want ReplaceFullPath or ReplacePrefixMatch", p.Type)
}

func headerModifier(h *model.HeaderModifier) *gatewayv1.HeaderModifier {
	out := &gatewayv1.HeaderModifier{Remove: h.Remove}
	for _, x := range h.Set {
		out.Set = append(out.Set, &gatewayv1.Header{Name: x.Name, Value: x.Value})
	}
	for _, x := range h.Add {
		out.Add = append(out.Add, &gatewayv1.Header{Name: x.Name, Value: x.Value})
	}
	return out
}

func filtersProto(fs []model.Filter) ([]*gatewayv1.Filter, error) {
	var out []*gatewayv1.Filter
	for i := range fs {
		f, err := filterProto(&fs[i])
		if err != nil {
			return nil, fmt.Errorf("filter %d (%s): %w", i, fs[i].Type, err)
		}
		out = append(out, f)
	}
	return out, nil
}

func filterProto(f *model.Filter) (*gatewayv1.Filter, error) {
	switch {
	case f.RequestHeaderModifier != nil:
		return &gatewayv1.Filter{Kind: &gatewayv1.Filter_RequestHeaderModifier{RequestHeaderModifier: headerModifier(f.RequestHeaderModifier)}}, nil
	case f.ResponseHeaderModifier != nil:
		return &gatewayv1.Filter{Kind: &gatewayv1.Filter_ResponseHeaderModifier{ResponseHeaderModifier: headerModifier(f.ResponseHeaderModifier)}}, nil
	case f.RequestRedirect != nil:
		r := f.RequestRedirect
		path, err := pathModifier(r.Path)
		if err != nil {
			return nil, err
		}
		return &gatewayv1.Filter{Kind: &gatewayv1.Filter_RequestRedirect{RequestRedirect: &gatewayv1.Redirect{
			Scheme: r.Scheme, Hostname: r.Hostname, Port: uint32(r.Port), Path: path, StatusCode: uint32(r.StatusCode),
		}}}, nil
	case f.URLRewrite != nil:
		path, err := pathModifier(f.URLRewrite.Path)
		if err != nil {
			return nil, err
		}
		return &gatewayv1.Filter{Kind: &gatewayv1.Filter_UrlRewrite{UrlRewrite: &gatewayv1.URLRewrite{Hostname: f.URLRewrite.Hostname, Path: path}}}, nil
	case f.RequestMirror != nil:
		b, err := backendRefProto(&f.RequestMirror.Backend)
		if err != nil {
			return nil, err
		}
		return &gatewayv1.Filter{Kind: &gatewayv1.Filter_RequestMirror{RequestMirror: &gatewayv1.Mirror{
			Backend: b, Numerator: uint32(f.RequestMirror.Numerator), Denominator: uint32(f.RequestMirror.Denominator),
		}}}, nil
	case f.CORS != nil:
		c := f.CORS
		return &gatewayv1.Filter{Kind: &gatewayv1.Filter_Cors{Cors: &gatewayv1.CORS{
			AllowOrigins: c.AllowOrigins, AllowCredentials: c.AllowCredentials, AllowMethods: c.AllowMethods,
			AllowHeaders: c.AllowHeaders, ExposeHeaders: c.ExposeHeaders, MaxAge: uint32(c.MaxAge),
		}}}, nil
	}
	return nil, fmt.Errorf("no filter body set: want one of requestHeaderModifier, responseHeaderModifier, requestRedirect, urlRewrite, requestMirror, cors")
}
