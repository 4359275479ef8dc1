// Package translate turns a resources snapshot into the mesh model plus the
// status of every object. Translate is a pure function: no I/O, no clock, no
// globals, so the same resources always give the same (deep-equal) result,
// whether they came from files or from Kubernetes.
package translate

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/ambitmesh/ambit/internal/control/model"
	"github.com/ambitmesh/ambit/internal/control/resources"
	"github.com/ambitmesh/ambit/internal/control/status"
)

// Result is the output of one translation.
type Result struct {
	Mesh *model.Mesh `json:"model"`
	// Status has one entry per translated object that has something to say,
	// sorted by kind, namespace, name.
	Status []status.Object `json:"status,omitempty"`
	// SourceErrors are passed through from the resources snapshot.
	SourceErrors []resources.SourceError `json:"sourceErrors,omitempty"`
}

// Rejected lists the objects that were not (fully) accepted.
func (r *Result) Rejected() []status.ObjectRef {
	var out []status.ObjectRef
	for i := range r.Status {
		if r.Status[i].Rejected() {
			out = append(out, r.Status[i].ObjectRef)
		}
	}
	return out
}

// Controller names as written into route parent status.
const (
	ControllerName = "ambit.dev/gateway-controller"
	// GatewayClass names ambit serves.
	ClassNameWaypoint = "ambit-waypoint"
	ClassNameIngress  = "ambit"
)

// Labels users put on objects.
const (
	LabelUseWaypoint          = "ambit.dev/use-waypoint"
	LabelUseWaypointNamespace = "ambit.dev/use-waypoint-namespace"
	// Istio ambient's spellings of the same two labels, read too so that
	// objects labelled for Istio move over unchanged; ambit's win on an
	// object carrying both.
	LabelIstioUseWaypoint          = "istio.io/use-waypoint"
	LabelIstioUseWaypointNamespace = "istio.io/use-waypoint-namespace"
	LabelWaypointFor               = "ambit.dev/waypoint-for"
)

// translator carries the indexes shared by the translation stages. It lives
// for one Translate call only.
type translator struct {
	res  *resources.Resources
	mesh *model.Mesh

	status map[status.ObjectRef]*status.Object

	// Indexes into mesh slices, filled by the stage that builds them.
	workloads map[model.Ref]*model.Workload
	services  map[model.Ref]*model.Service
	// gateways are the accepted Gateways of ambit's classes.
	gateways map[model.Ref]*model.Gateway

	vipRange netip.Prefix
	// labels indexes workloads by label, built once workloads are known.
	labels labelIndex
}

// Translate computes the mesh model and status for a snapshot.
func Translate(res *resources.Resources) *Result {
	t := &translator{
		res:       res,
		mesh:      &model.Mesh{},
		status:    map[status.ObjectRef]*status.Object{},
		workloads: map[model.Ref]*model.Workload{},
		services:  map[model.Ref]*model.Service{},
		gateways:  map[model.Ref]*model.Gateway{},
	}
	t.meshSettings()
	t.translateWorkloads()
	t.translateServices()
	t.loadBalancers()
	t.translateGateways()
	t.bindWaypoints()
	t.translateRoutes()
	t.backendTLSPolicies()
	t.translatePolicies()
	return t.result()
}

func (t *translator) result() *Result {
	r := &Result{Mesh: t.mesh, SourceErrors: t.res.Errors}
	for _, o := range t.status {
		r.Status = append(r.Status, *o)
	}
	status.Sort(r.Status)
	slices.SortFunc(t.mesh.Gateways, func(a, b model.Gateway) int { return compareRef(a.Ref, b.Ref) })
	return r
}

// obj returns (creating) the status entry of an object.
func (t *translator) obj(ref status.ObjectRef) *status.Object {
	o, ok := t.status[ref]
	if !ok {
		o = &status.Object{ObjectRef: ref}
		t.status[ref] = o
	}
	return o
}

// setCondition sets (replacing the same type) a condition on an object.
func setCondition(conds *[]status.Condition, c status.Condition) {
	for i := range *conds {
		if (*conds)[i].Type == c.Type {
			(*conds)[i] = c
			return
		}
	}
	*conds = append(*conds, c)
}

func compareRef(a, b model.Ref) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// TrustDomain is the trust domain Translate would use for res (MeshConfig's,
// or the default when unset or invalid), without translating the rest: the
// control plane needs it before it opens its CA.
func TrustDomain(res *resources.Resources) string {
	t := &translator{res: res, mesh: &model.Mesh{}, status: map[status.ObjectRef]*status.Object{}}
	t.meshSettings()
	return t.mesh.TrustDomain
}
