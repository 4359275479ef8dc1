package conformance_test

import (
	"context"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambitmesh/ambit/internal/control/status"
)

// cluster is the client the upstream tests drive. Writes go to the
// in-memory store and then to the control plane's folder (env.sync); reads
// of Gateways, HTTPRoutes and GatewayClasses carry the status the control
// plane computed for the objects it last loaded, with observedGeneration
// from the files, so "status is current" means what it means on a cluster.
type cluster struct {
	client.Client // the store
	env           *env
}

func (c *cluster) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	if obj.GetGeneration() == 0 {
		obj.SetGeneration(1)
	}
	if l := meshNamespaceLabels(obj.GetName()); l != nil && obj.GetNamespace() == "" {
		if _, isNS := obj.(*corev1.Namespace); isNS || obj.GetObjectKind().GroupVersionKind().Kind == "Namespace" {
			labels := obj.GetLabels()
			if labels == nil {
				labels = map[string]string{}
			}
			maps.Copy(labels, l)
			obj.SetLabels(labels)
		}
	}
	if err := c.remember(obj); err != nil {
		return err
	}
	if err := c.Client.Create(ctx, obj, opts...); err != nil {
		return err
	}
	return c.env.sync(ctx)
}

// Update bumps the generation as the API server does for a spec change
// (the suite only updates to change the spec).
func (c *cluster) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	gen, err := c.storedGeneration(ctx, obj)
	if err != nil {
		return err
	}
	obj.SetGeneration(gen + 1)
	if err := c.Client.Update(ctx, obj, opts...); err != nil {
		return err
	}
	return c.env.sync(ctx)
}

func (c *cluster) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	gen, err := c.storedGeneration(ctx, obj)
	if err != nil {
		return err
	}
	if err := c.Client.Patch(ctx, obj, patch, opts...); err != nil {
		return err
	}
	obj.SetGeneration(gen + 1)
	if err := c.Client.Update(ctx, obj); err != nil {
		return err
	}
	return c.env.sync(ctx)
}

func (c *cluster) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	if err := c.Client.Delete(ctx, obj, opts...); err != nil {
		return err
	}
	return c.env.sync(ctx)
}

func (c *cluster) DeleteAllOf(ctx context.Context, obj client.Object, opts ...client.DeleteAllOfOption) error {
	if err := c.Client.DeleteAllOf(ctx, obj, opts...); err != nil {
		return err
	}
	return c.env.sync(ctx)
}

func (c *cluster) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if err := c.Client.Get(ctx, key, obj, opts...); err != nil {
		return err
	}
	c.fillStatus(obj)
	return nil
}

func (c *cluster) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if err := c.Client.List(ctx, list, opts...); err != nil {
		return err
	}
	switch l := list.(type) {
	case *gwv1.GatewayList:
		for i := range l.Items {
			c.fillStatus(&l.Items[i])
		}
	case *gwv1.HTTPRouteList:
		for i := range l.Items {
			c.fillStatus(&l.Items[i])
		}
	case *gwv1.GatewayClassList:
		for i := range l.Items {
			c.fillStatus(&l.Items[i])
		}
	}
	return nil
}

func (c *cluster) remember(obj client.Object) error {
	gvk, err := apiutil.GVKForObject(obj, c.Scheme())
	if err != nil {
		return fmt.Errorf("kind of %s: %w", obj.GetName(), err)
	}
	c.env.remember(gvk)
	return nil
}

func (c *cluster) storedGeneration(ctx context.Context, obj client.Object) (int64, error) {
	gvk, err := apiutil.GVKForObject(obj, c.Scheme())
	if err != nil {
		return 0, err
	}
	cur := &unstructured.Unstructured{}
	cur.SetGroupVersionKind(gvk)
	if err := c.Client.Get(ctx, client.ObjectKeyFromObject(obj), cur); err != nil {
		return 0, err
	}
	return cur.GetGeneration(), nil
}

// fillStatus replaces obj's status with the control plane's view of it.
func (c *cluster) fillStatus(obj client.Object) {
	switch o := obj.(type) {
	case *gwv1.Gateway:
		o.Status = gwv1.GatewayStatus{}
		st := c.status("Gateway", o.Namespace, o.Name)
		if st == nil {
			return
		}
		o.Status.Conditions = conditions(st.Conditions)
		for _, l := range st.Listeners {
			ls := gwv1.ListenerStatus{Name: gwv1.SectionName(l.Name), AttachedRoutes: l.AttachedRoutes, Conditions: conditions(l.Conditions),
				SupportedKinds: []gwv1.RouteGroupKind{}}
			for _, k := range l.SupportedKinds {
				ls.SupportedKinds = append(ls.SupportedKinds, gwv1.RouteGroupKind{Group: ptr(gwv1.Group(gwv1.GroupName)), Kind: gwv1.Kind(k)})
			}
			o.Status.Listeners = append(o.Status.Listeners, ls)
		}
		if ip := c.env.gatewayIP(types.NamespacedName{Namespace: o.Namespace, Name: o.Name}); ip != "" {
			o.Status.Addresses = []gwv1.GatewayStatusAddress{{Type: ptr(gwv1.IPAddressType), Value: ip}}
		}
	case *gwv1.HTTPRoute:
		o.Status = gwv1.HTTPRouteStatus{}
		if st := c.status("HTTPRoute", o.Namespace, o.Name); st != nil {
			o.Status.Parents = parents(st.Parents)
		}
	case *gwv1.BackendTLSPolicy:
		o.Status = gwv1.PolicyStatus{}
		if st := c.status("BackendTLSPolicy", o.Namespace, o.Name); st != nil {
			for _, p := range parents(st.Parents) {
				o.Status.Ancestors = append(o.Status.Ancestors, gwv1.PolicyAncestorStatus{AncestorRef: p.ParentRef, ControllerName: p.ControllerName, Conditions: p.Conditions})
			}
		}
	case *gwv1.GatewayClass:
		o.Status = gwv1.GatewayClassStatus{}
		if st := c.status("GatewayClass", "", o.Name); st != nil {
			o.Status.Conditions = conditions(st.Conditions)
		}
	}
}

// status is the control plane's status of a Gateway API object from its
// last translation, nil when it has none (yet).
func (c *cluster) status(kind, namespace, name string) *status.Object {
	r := c.env.cp.Result()
	if r == nil {
		return nil
	}
	want := status.ObjectRef{Group: gwv1.GroupName, Kind: kind, Namespace: namespace, Name: name}
	for i := range r.Status {
		if r.Status[i].ObjectRef == want {
			return &r.Status[i]
		}
	}
	return nil
}

func conditions(cs []status.Condition) []metav1.Condition {
	out := make([]metav1.Condition, 0, len(cs))
	for _, c := range cs {
		out = append(out, metav1.Condition{Type: c.Type, Status: metav1.ConditionStatus(c.Status), Reason: c.Reason,
			Message: c.Message, ObservedGeneration: c.ObservedGeneration, LastTransitionTime: metav1.Now()})
	}
	return out
}

// parents converts route parent status. Group and Kind are written out
// with their defaults, as the API server's defaulting of the route's
// parentRefs does.
func parents(ps []status.Parent) []gwv1.RouteParentStatus {
	out := make([]gwv1.RouteParentStatus, 0, len(ps))
	for _, p := range ps {
		ref := gwv1.ParentReference{Group: ptr(gwv1.Group(gwv1.GroupName)), Kind: ptr(gwv1.Kind("Gateway")), Name: gwv1.ObjectName(p.ParentRef.Name)}
		if p.ParentRef.Group != "" || p.ParentRef.Kind != "" {
			ref.Group, ref.Kind = ptr(gwv1.Group(p.ParentRef.Group)), ptr(gwv1.Kind(p.ParentRef.Kind))
		}
		if p.ParentRef.Namespace != "" {
			ref.Namespace = ptr(gwv1.Namespace(p.ParentRef.Namespace))
		}
		if p.ParentRef.SectionName != "" {
			ref.SectionName = ptr(gwv1.SectionName(p.ParentRef.SectionName))
		}
		if p.ParentRef.Port != 0 {
			ref.Port = ptr(gwv1.PortNumber(p.ParentRef.Port))
		}
		out = append(out, gwv1.RouteParentStatus{ParentRef: ref, ControllerName: gwv1.GatewayController(p.ControllerName), Conditions: conditions(p.Conditions)})
	}
	return out
}

func ptr[T any](v T) *T { return &v }
