package translate

import (
	"fmt"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/ambitmesh/ambit/internal/control/model"
	"github.com/ambitmesh/ambit/internal/control/resources"
	"github.com/ambitmesh/ambit/internal/control/status"
)

// Annotations users put on Services to choose how waypoints and gateways
// balance requests over the endpoints (the role of Istio's DestinationRule
// trafficPolicy.loadBalancer until ambit has a policy object for it).
const (
	AnnotationLBPolicy = "ambit.dev/lb-policy"
	AnnotationLBHash   = "ambit.dev/lb-hash"
)

// ConditionLoadBalancer reports the outcome of a Service's load balancing
// annotations; Services without them get no such condition.
const ConditionLoadBalancer = "ambit.dev/LoadBalancer"

// lbPolicies maps the accepted spellings, folded by lbFold, to the model's
// names: Envoy Gateway's (RoundRobin), Istio's (ROUND_ROBIN) and
// kebab-case (round-robin) all work.
var lbPolicies = map[string]string{
	"leastrequest":   model.LBLeastRequest,
	"roundrobin":     model.LBRoundRobin,
	"random":         model.LBRandom,
	"consistenthash": model.LBConsistentHash,
}

func lbFold(s string) string {
	return strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(strings.TrimSpace(s)))
}

// loadBalancers reads every Service's load balancing annotations. An
// invalid value leaves the Service with the default (least request) and
// says why in the ambit.dev/LoadBalancer condition; the Service itself
// stays in the mesh.
func (t *translator) loadBalancers() {
	for i := range t.mesh.Services {
		s := &t.mesh.Services[i]
		src := t.res.Service(s.Namespace, s.Name)
		policy, hasPolicy := src.Annotations[AnnotationLBPolicy]
		hash, hasHash := src.Annotations[AnnotationLBHash]
		if !hasPolicy && !hasHash {
			continue
		}
		cond := status.Condition{Type: ConditionLoadBalancer, ObservedGeneration: resources.Generation(src)}
		lb, err := parseLoadBalancer(policy, hasPolicy, hash, hasHash)
		if err != nil {
			cond.Status, cond.Reason = status.False, ReasonInvalid
			cond.Message = err.Error() + "; requests are balanced by least request until it is fixed"
		} else {
			s.LoadBalancer = lb
			cond.Status, cond.Reason = status.True, ReasonAccepted
			cond.Message = "load balancing: " + lb.Policy
			if lb.Hash != nil {
				cond.Message += " on " + strings.TrimSpace(hash)
			}
		}
		setCondition(&t.obj(status.ObjectRef{Kind: "Service", Namespace: s.Namespace, Name: s.Name}).Conditions, cond)
	}
}

// parseLoadBalancer validates the two annotations together: a hash key
// alone means ConsistentHash, ConsistentHash needs one, and no other policy
// takes one.
func parseLoadBalancer(policy string, hasPolicy bool, hash string, hasHash bool) (*model.LoadBalancer, error) {
	lb := &model.LoadBalancer{Policy: model.LBConsistentHash}
	if hasPolicy {
		p, ok := lbPolicies[lbFold(policy)]
		if !ok {
			return nil, fmt.Errorf("annotation %s: %q is not a load balancing policy; use LeastRequest (the default), RoundRobin, Random or ConsistentHash", AnnotationLBPolicy, policy)
		}
		lb.Policy = p
	}
	switch {
	case lb.Policy == model.LBConsistentHash && !hasHash:
		return nil, fmt.Errorf("annotation %s: ConsistentHash needs annotation %s naming the key (header:<name>, cookie:<name>[;ttl=<duration>][;path=<path>] or source-ip)", AnnotationLBPolicy, AnnotationLBHash)
	case lb.Policy != model.LBConsistentHash && hasHash:
		return nil, fmt.Errorf("annotation %s: a hash key is only used by ConsistentHash, but %s is %s; remove one of them", AnnotationLBHash, AnnotationLBPolicy, lb.Policy)
	case !hasHash:
		return lb, nil
	}
	key, err := parseHashKey(hash)
	if err != nil {
		return nil, fmt.Errorf("annotation %s: %q: %w", AnnotationLBHash, hash, err)
	}
	lb.Hash = key
	return lb, nil
}

// parseHashKey reads header:<name>, cookie:<name>[;ttl=<d>][;path=<p>] or
// source-ip (Istio's httpHeaderName, httpCookie and useSourceIp).
func parseHashKey(v string) (*model.HashKey, error) {
	v = strings.TrimSpace(v)
	if lbFold(v) == "sourceip" {
		return &model.HashKey{SourceIP: true}, nil
	}
	kind, rest, ok := strings.Cut(v, ":")
	if !ok {
		return nil, fmt.Errorf("want header:<name>, cookie:<name>[;ttl=<duration>][;path=<path>] or source-ip")
	}
	parts := strings.Split(rest, ";")
	name := strings.TrimSpace(parts[0])
	if !httpguts.ValidHeaderFieldName(name) {
		return nil, fmt.Errorf("%q is not a valid %s name", name, kind)
	}
	switch strings.ToLower(kind) {
	case "header":
		if len(parts) > 1 {
			return nil, fmt.Errorf("a header key takes no attributes (%q)", strings.Join(parts[1:], ";"))
		}
		return &model.HashKey{Header: strings.ToLower(name)}, nil
	case "cookie":
		key := &model.HashKey{Cookie: name}
		for _, attr := range parts[1:] {
			k, val, _ := strings.Cut(strings.TrimSpace(attr), "=")
			switch strings.ToLower(k) {
			case "ttl":
				d, err := time.ParseDuration(val)
				if err != nil || d <= 0 {
					return nil, fmt.Errorf("ttl=%s: want a positive duration such as 1h or 30m", val)
				}
				key.CookieTTL = d
			case "path":
				if !strings.HasPrefix(val, "/") {
					return nil, fmt.Errorf("path=%s: want a path starting with /", val)
				}
				key.CookiePath = val
			default:
				return nil, fmt.Errorf("cookie attribute %q: want ttl=<duration> or path=<path>", attr)
			}
		}
		return key, nil
	}
	return nil, fmt.Errorf("key kind %q: want header, cookie or source-ip", kind)
}
