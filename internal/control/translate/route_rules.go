package translate

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambitmesh/ambit/internal/control/model"
)

// Route condition reasons ambit writes besides the Gateway API constants.
const (
	reasonUnsupportedValue    = string(gwv1.RouteReasonUnsupportedValue)
	reasonIncompatibleFilters = string(gwv1.RouteReasonIncompatibleFilters)
)

// problem is a reason and a message for a route condition.
type problem struct {
	reason, msg string
}

// ruleCompiler converts the rules of one route, collecting reference
// problems (ResolvedRefs) and the reasons a rule must be dropped.
type ruleCompiler struct {
	t     *translator
	route *xroute
	// refs are backendRef problems: the rule still serves, the bad
	// backend's share answers an error.
	refs []problem
	// invalid are problems that make the current rule unusable.
	invalid []problem
}

func (rc *ruleCompiler) fail(reason, format string, args ...any) {
	rc.invalid = append(rc.invalid, problem{reason, fmt.Sprintf(format, args...)})
}

// backend resolves a backendRef (or a mirror's backendRef). A backend that
// cannot be used keeps its weight and says why in Invalid, so that its share
// of traffic answers an error, as the spec requires.
func (rc *ruleCompiler) backend(field string, ref gwv1.BackendObjectReference, weight *int32) model.Backend {
	b := model.Backend{Weight: deref(weight, 1)}
	bad := func(reason, format string, args ...any) model.Backend {
		msg := field + ": " + fmt.Sprintf(format, args...)
		rc.refs = append(rc.refs, problem{reason, msg})
		b.Invalid = msg
		return b
	}
	if b.Weight < 0 {
		b.Weight = 0
		return bad(reasonUnsupportedValue, "weight %d is negative; use 0 or more", *weight)
	}
	group, kind := string(deref(ref.Group, "")), string(deref(ref.Kind, "Service"))
	ns := string(deref(ref.Namespace, gwv1.Namespace(rc.route.ns)))
	name := string(ref.Name)
	if group != "" || kind != "Service" {
		return bad(string(gwv1.RouteReasonInvalidKind), "%s is not supported; reference a Service (group \"\", kind Service)", groupKind(group, kind))
	}
	if !rc.t.refGranted(gwGroup, rc.route.kind, rc.route.ns, "", "Service", ns, name) {
		return bad(string(gwv1.RouteReasonRefNotPermitted),
			"Service %s/%s is in another namespace and no ReferenceGrant in %q allows %ss from %q to use it",
			ns, name, ns, rc.route.kind, rc.route.ns)
	}
	if ref.Port == nil {
		return bad(reasonUnsupportedValue, "port is required for a Service backend")
	}
	port := *ref.Port
	svc := rc.t.res.Service(ns, name)
	if svc == nil {
		return bad(string(gwv1.RouteReasonBackendNotFound), "Service %s/%s not found", ns, name)
	}
	found := false
	for _, p := range svc.Spec.Ports {
		found = found || p.Port == port
	}
	if !found {
		return bad(string(gwv1.RouteReasonBackendNotFound), "Service %s/%s has no port %d", ns, name, port)
	}
	sref := model.Ref{Namespace: ns, Name: name}
	if _, ok := rc.t.services[sref]; !ok {
		return bad(string(gwv1.RouteReasonBackendNotFound), "Service %s/%s is not accepted; see its status", ns, name)
	}
	b.Service, b.Port = sref, port
	return b
}

// gatewayDuration parses a GEP-2257 duration, a strict subset of Go's.
var gatewayDurationRE = regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`)

func parseGatewayDuration(d gwv1.Duration) (time.Duration, error) {
	if !gatewayDurationRE.MatchString(string(d)) {
		return 0, fmt.Errorf("%q is not a Gateway API duration (e.g. 1h, 30s, 500ms, 1m30s)", d)
	}
	return time.ParseDuration(string(d))
}

func validRegex(field, re string) error {
	if _, err := regexp.Compile(re); err != nil {
		return fmt.Errorf("%s: %q is not a valid RE2 regular expression: %w", field, re, err)
	}
	return nil
}

var httpMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

// checkPath applies the CEL rules of HTTPPathMatch, which no API server
// enforces in file mode.
func checkPath(v string) string {
	if !strings.HasPrefix(v, "/") {
		return "must start with '/'"
	}
	for _, bad := range []string{"//", "/./", "/../", "%2f", "%2F", "#"} {
		if strings.Contains(v, bad) {
			return fmt.Sprintf("must not contain %q", bad)
		}
	}
	if strings.HasSuffix(v, "/..") || strings.HasSuffix(v, "/.") {
		return "must not end with '/.' or '/..'"
	}
	return ""
}

// httpMatch converts one HTTPRouteMatch, applying the spec's defaults.
func (rc *ruleCompiler) httpMatch(field string, m gwv1.HTTPRouteMatch) model.RouteMatch {
	out := model.RouteMatch{Path: &model.PathMatch{Type: model.MatchPathPrefix, Value: "/"}}
	if m.Path != nil {
		out.Path.Type = string(deref(m.Path.Type, gwv1.PathMatchPathPrefix))
		out.Path.Value = deref(m.Path.Value, "/")
		switch out.Path.Type {
		case model.MatchExact, model.MatchPathPrefix:
			if why := checkPath(out.Path.Value); why != "" {
				rc.fail(reasonUnsupportedValue, "%s.path.value: %q %s", field, out.Path.Value, why)
			}
		case model.MatchRegularExpression:
			if err := validRegex(field+".path.value", out.Path.Value); err != nil {
				rc.fail(reasonUnsupportedValue, "%v", err)
			}
		default:
			rc.fail(reasonUnsupportedValue, "%s.path.type: %q is not supported; use Exact, PathPrefix or RegularExpression", field, out.Path.Type)
		}
	}
	seen := map[string]bool{}
	for j, h := range m.Headers {
		name := strings.ToLower(string(h.Name))
		if seen[name] {
			continue // only the first entry for a name counts, as the spec says
		}
		seen[name] = true
		out.Headers = append(out.Headers, rc.stringMatch(fmt.Sprintf("%s.headers[%d]", field, j), name, string(deref(h.Type, gwv1.HeaderMatchExact)), h.Value))
	}
	seen = map[string]bool{}
	for j, q := range m.QueryParams {
		name := string(q.Name)
		if seen[name] {
			continue
		}
		seen[name] = true
		out.QueryParams = append(out.QueryParams, rc.stringMatch(fmt.Sprintf("%s.queryParams[%d]", field, j), name, string(deref(q.Type, gwv1.QueryParamMatchExact)), q.Value))
	}
	if m.Method != nil {
		out.Method = string(*m.Method)
		if !slices.Contains(httpMethods, out.Method) {
			rc.fail(reasonUnsupportedValue, "%s.method: %q is not supported; use one of %s", field, out.Method, strings.Join(httpMethods, ", "))
		}
	}
	return out
}

func (rc *ruleCompiler) stringMatch(field, name, typ, value string) model.StringMatch {
	switch typ {
	case model.MatchExact:
	case model.MatchRegularExpression:
		if err := validRegex(field+".value", value); err != nil {
			rc.fail(reasonUnsupportedValue, "%v", err)
		}
	default:
		rc.fail(reasonUnsupportedValue, "%s.type: %q is not supported; use Exact or RegularExpression", field, typ)
	}
	if name == "" {
		rc.fail(reasonUnsupportedValue, "%s.name: required", field)
	}
	return model.StringMatch{Type: typ, Name: name, Value: value}
}

// grpcMatch compiles a GRPCRouteMatch to an HTTP match on POST
// /<service>/<method>, which is how gRPC puts calls on the wire. It also
// returns the lengths of service and method, which rank gRPC matches.
func (rc *ruleCompiler) grpcMatch(field string, m gwv1.GRPCRouteMatch) (model.RouteMatch, int, int) {
	out := model.RouteMatch{Method: "POST", GRPC: true, Path: &model.PathMatch{Type: model.MatchPathPrefix, Value: "/"}}
	var svcLen, methodLen int
	if mm := m.Method; mm != nil {
		svc, method := deref(mm.Service, ""), deref(mm.Method, "")
		svcLen, methodLen = len(svc), len(method)
		switch typ := deref(mm.Type, gwv1.GRPCMethodMatchExact); typ {
		case gwv1.GRPCMethodMatchExact:
			if strings.Contains(svc, "/") || strings.Contains(method, "/") {
				rc.fail(reasonUnsupportedValue, "%s.method: service and method must not contain '/'", field)
			}
			switch {
			case svc != "" && method != "":
				*out.Path = model.PathMatch{Type: model.MatchExact, Value: "/" + svc + "/" + method}
			case svc != "":
				*out.Path = model.PathMatch{Type: model.MatchPathPrefix, Value: "/" + svc + "/"}
			case method != "":
				*out.Path = model.PathMatch{Type: model.MatchRegularExpression, Value: "/[^/]+/" + regexp.QuoteMeta(method)}
			default:
				rc.fail(reasonUnsupportedValue, "%s.method: at least one of service and method is required", field)
			}
		case gwv1.GRPCMethodMatchRegularExpression:
			for _, p := range []struct{ name, re string }{{"service", svc}, {"method", method}} {
				if p.re != "" {
					if err := validRegex(field+".method."+p.name, p.re); err != nil {
						rc.fail(reasonUnsupportedValue, "%v", err)
					}
				}
			}
			if svc == "" {
				svc = "[^/]+"
			}
			if method == "" {
				method = "[^/]+"
			}
			*out.Path = model.PathMatch{Type: model.MatchRegularExpression, Value: "/(?:" + svc + ")/(?:" + method + ")"}
		default:
			rc.fail(reasonUnsupportedValue, "%s.method.type: %q is not supported; use Exact or RegularExpression", field, typ)
		}
	}
	seen := map[string]bool{}
	for j, h := range m.Headers {
		name := strings.ToLower(string(h.Name))
		if seen[name] {
			continue
		}
		seen[name] = true
		out.Headers = append(out.Headers, rc.stringMatch(fmt.Sprintf("%s.headers[%d]", field, j), name, string(deref(h.Type, gwv1.GRPCHeaderMatchExact)), h.Value))
	}
	return out, svcLen, methodLen
}

func headerModifier(rc *ruleCompiler, field string, f *gwv1.HTTPHeaderFilter) *model.HeaderModifier {
	m := &model.HeaderModifier{}
	seen := map[string]bool{}
	use := func(name string) {
		n := strings.ToLower(name)
		if seen[n] {
			rc.fail(reasonUnsupportedValue, "%s: header %q appears more than once; one action per header name", field, name)
		}
		seen[n] = true
	}
	for _, h := range f.Set {
		use(string(h.Name))
		m.Set = append(m.Set, model.Header{Name: string(h.Name), Value: h.Value})
	}
	for _, h := range f.Add {
		use(string(h.Name))
		m.Add = append(m.Add, model.Header{Name: string(h.Name), Value: h.Value})
	}
	for _, h := range f.Remove {
		use(h)
		m.Remove = append(m.Remove, h)
	}
	return m
}

func pathModifier(rc *ruleCompiler, field string, p *gwv1.HTTPPathModifier) *model.PathModifier {
	if p == nil {
		return nil
	}
	out := &model.PathModifier{Type: string(p.Type)}
	switch p.Type {
	case gwv1.FullPathHTTPPathModifier:
		if p.ReplaceFullPath == nil {
			rc.fail(reasonUnsupportedValue, "%s.replaceFullPath: required for type ReplaceFullPath", field)
		} else {
			out.ReplaceFullPath = *p.ReplaceFullPath
		}
	case gwv1.PrefixMatchHTTPPathModifier:
		if p.ReplacePrefixMatch == nil {
			rc.fail(reasonUnsupportedValue, "%s.replacePrefixMatch: required for type ReplacePrefixMatch", field)
		} else {
			out.ReplacePrefixMatch = *p.ReplacePrefixMatch
		}
	default:
		rc.fail(reasonUnsupportedValue, "%s.type: %q is not supported; use ReplaceFullPath or ReplacePrefixMatch", field, p.Type)
	}
	return out
}

var redirectCodes = []int{301, 302, 303, 307, 308}

// httpFilters converts HTTPRoute filters (rule or backendRef level).
func (rc *ruleCompiler) httpFilters(field string, fs []gwv1.HTTPRouteFilter) []model.Filter {
	var out []model.Filter
	count := map[gwv1.HTTPRouteFilterType]int{}
	for i, f := range fs {
		ff := fmt.Sprintf("%s[%d]", field, i)
		count[f.Type]++
		if count[f.Type] > 1 && f.Type != gwv1.HTTPRouteFilterRequestMirror && f.Type != gwv1.HTTPRouteFilterExtensionRef {
			rc.fail(reasonUnsupportedValue, "%s: filter %s appears more than once", ff, f.Type)
		}
		mf := model.Filter{Type: string(f.Type)}
		missing := func(name string) { rc.fail(reasonUnsupportedValue, "%s.%s: required for type %s", ff, name, f.Type) }
		switch f.Type {
		case gwv1.HTTPRouteFilterRequestHeaderModifier:
			if f.RequestHeaderModifier == nil {
				missing("requestHeaderModifier")
				continue
			}
			mf.RequestHeaderModifier = headerModifier(rc, ff+".requestHeaderModifier", f.RequestHeaderModifier)
		case gwv1.HTTPRouteFilterResponseHeaderModifier:
			if f.ResponseHeaderModifier == nil {
				missing("responseHeaderModifier")
				continue
			}
			mf.ResponseHeaderModifier = headerModifier(rc, ff+".responseHeaderModifier", f.ResponseHeaderModifier)
		case gwv1.HTTPRouteFilterRequestRedirect:
			r := f.RequestRedirect
			if r == nil {
				missing("requestRedirect")
				continue
			}
			rd := &model.Redirect{Scheme: deref(r.Scheme, ""), Hostname: string(deref(r.Hostname, "")), Port: deref(r.Port, 0),
				StatusCode: deref(r.StatusCode, 302), Path: pathModifier(rc, ff+".requestRedirect.path", r.Path)}
			if rd.Scheme != "" && rd.Scheme != "http" && rd.Scheme != "https" {
				rc.fail(reasonUnsupportedValue, "%s.requestRedirect.scheme: %q is not supported; use http or https", ff, rd.Scheme)
			}
			if !slices.Contains(redirectCodes, rd.StatusCode) {
				rc.fail(reasonUnsupportedValue, "%s.requestRedirect.statusCode: %d is not supported; use 301, 302, 303, 307 or 308", ff, rd.StatusCode)
			}
			mf.RequestRedirect = rd
		case gwv1.HTTPRouteFilterURLRewrite:
			u := f.URLRewrite
			if u == nil {
				missing("urlRewrite")
				continue
			}
			mf.URLRewrite = &model.URLRewrite{Hostname: string(deref(u.Hostname, "")), Path: pathModifier(rc, ff+".urlRewrite.path", u.Path)}
		case gwv1.HTTPRouteFilterRequestMirror:
			m, ok := rc.mirror(ff, f.RequestMirror)
			if !ok {
				continue
			}
			mf.RequestMirror = m
		case gwv1.HTTPRouteFilterCORS:
			c := f.CORS
			if c == nil {
				missing("cors")
				continue
			}
			mc := &model.CORS{AllowCredentials: deref(c.AllowCredentials, false), MaxAge: c.MaxAge}
			if mc.MaxAge == 0 {
				mc.MaxAge = 5 // the spec's default for Access-Control-Max-Age
			}
			for _, o := range c.AllowOrigins {
				mc.AllowOrigins = append(mc.AllowOrigins, string(o))
			}
			for _, m := range c.AllowMethods {
				mc.AllowMethods = append(mc.AllowMethods, string(m))
			}
			for _, h := range c.AllowHeaders {
				mc.AllowHeaders = append(mc.AllowHeaders, string(h))
			}
			for _, h := range c.ExposeHeaders {
				mc.ExposeHeaders = append(mc.ExposeHeaders, string(h))
			}
			mf.CORS = mc
		case gwv1.HTTPRouteFilterExtensionRef:
			rc.extensionRef(ff, f.ExtensionRef)
			continue
		case gwv1.HTTPRouteFilterExternalAuth:
			rc.fail(reasonUnsupportedValue, "%s: filter type ExternalAuth is not supported yet", ff)
			continue
		default:
			rc.fail(reasonUnsupportedValue, "%s.type: %q is not supported; use RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite, RequestMirror or CORS", ff, f.Type)
			continue
		}
		out = append(out, mf)
	}
	if count[gwv1.HTTPRouteFilterRequestRedirect] > 0 && count[gwv1.HTTPRouteFilterURLRewrite] > 0 {
		rc.fail(reasonIncompatibleFilters, "%s: RequestRedirect and URLRewrite cannot be used together", field)
	}
	return out
}

// grpcFilters converts GRPCRoute filters.
func (rc *ruleCompiler) grpcFilters(field string, fs []gwv1.GRPCRouteFilter) []model.Filter {
	var out []model.Filter
	count := map[gwv1.GRPCRouteFilterType]int{}
	for i, f := range fs {
		ff := fmt.Sprintf("%s[%d]", field, i)
		count[f.Type]++
		if count[f.Type] > 1 && f.Type != gwv1.GRPCRouteFilterRequestMirror && f.Type != gwv1.GRPCRouteFilterExtensionRef {
			rc.fail(reasonUnsupportedValue, "%s: filter %s appears more than once", ff, f.Type)
		}
		mf := model.Filter{Type: string(f.Type)}
		switch f.Type {
		case gwv1.GRPCRouteFilterRequestHeaderModifier:
			if f.RequestHeaderModifier == nil {
				rc.fail(reasonUnsupportedValue, "%s.requestHeaderModifier: required for type RequestHeaderModifier", ff)
				continue
			}
			mf.RequestHeaderModifier = headerModifier(rc, ff+".requestHeaderModifier", f.RequestHeaderModifier)
		case gwv1.GRPCRouteFilterResponseHeaderModifier:
			if f.ResponseHeaderModifier == nil {
				rc.fail(reasonUnsupportedValue, "%s.responseHeaderModifier: required for type ResponseHeaderModifier", ff)
				continue
			}
			mf.ResponseHeaderModifier = headerModifier(rc, ff+".responseHeaderModifier", f.ResponseHeaderModifier)
		case gwv1.GRPCRouteFilterRequestMirror:
			m, ok := rc.mirror(ff, f.RequestMirror)
			if !ok {
				continue
			}
			mf.RequestMirror = m
		case gwv1.GRPCRouteFilterExtensionRef:
			rc.extensionRef(ff, f.ExtensionRef)
			continue
		default:
			rc.fail(reasonUnsupportedValue, "%s.type: %q is not supported; use RequestHeaderModifier, ResponseHeaderModifier or RequestMirror", ff, f.Type)
			continue
		}
		out = append(out, mf)
	}
	return out
}

func (rc *ruleCompiler) extensionRef(field string, ref *gwv1.LocalObjectReference) {
	what := "an ExtensionRef filter"
	if ref != nil {
		what = fmt.Sprintf("ExtensionRef %s %q", groupKind(string(ref.Group), string(ref.Kind)), ref.Name)
	}
	rc.fail(reasonUnsupportedValue, "%s: %s is not supported: ambit has no extension filters", field, what)
}

// mirror converts a RequestMirror filter. A mirror whose backend cannot be
// resolved is left out (the spec says not to configure it) and reported
// through ResolvedRefs.
func (rc *ruleCompiler) mirror(field string, m *gwv1.HTTPRequestMirrorFilter) (*model.Mirror, bool) {
	if m == nil {
		rc.fail(reasonUnsupportedValue, "%s.requestMirror: required for type RequestMirror", field)
		return nil, false
	}
	out := &model.Mirror{Numerator: 100, Denominator: 100}
	switch {
	case m.Percent != nil && m.Fraction != nil:
		rc.fail(reasonUnsupportedValue, "%s.requestMirror: set percent or fraction, not both", field)
		return nil, false
	case m.Percent != nil:
		out.Numerator = *m.Percent
	case m.Fraction != nil:
		out.Numerator, out.Denominator = m.Fraction.Numerator, deref(m.Fraction.Denominator, 100)
	}
	if out.Denominator < 1 || out.Numerator < 0 || out.Numerator > out.Denominator {
		rc.fail(reasonUnsupportedValue, "%s.requestMirror: share %d/%d is not valid; it must be between 0 and 1", field, out.Numerator, out.Denominator)
		return nil, false
	}
	b := rc.backend(field+".requestMirror.backendRef", m.BackendRef, nil)
	if b.Invalid != "" {
		return nil, false
	}
	out.Backend = b
	return out, true
}
