// Package status holds the per-object status the translator computes and
// the sources write back (file mode: reported by the CLI; Kubernetes: the
// objects' status subresources). Conditions carry no timestamps so that
// translation stays a pure function; writers stamp them.
package status

import (
	"cmp"
	"slices"
	"strings"
)

// ObjectRef names any object the status is about.
type ObjectRef struct {
	Group     string `json:"group,omitempty"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

func (r ObjectRef) String() string {
	if r.Namespace == "" {
		return r.Kind + " " + r.Name
	}
	return r.Kind + " " + r.Namespace + "/" + r.Name
}

// Compare orders refs by kind, namespace, name.
func (r ObjectRef) Compare(o ObjectRef) int {
	return cmp.Or(cmp.Compare(r.Group, o.Group), cmp.Compare(r.Kind, o.Kind),
		cmp.Compare(r.Namespace, o.Namespace), cmp.Compare(r.Name, o.Name))
}

// Condition mirrors metav1.Condition without the timestamp.
type Condition struct {
	Type               string `json:"type"`
	Status             string `json:"status"` // True, False, Unknown
	Reason             string `json:"reason"`
	Message            string `json:"message,omitempty"`
	ObservedGeneration int64  `json:"observedGeneration"`
}

// Object is the status of one object.
type Object struct {
	ObjectRef  `json:",inline"`
	Conditions []Condition `json:"conditions,omitempty"`
	// Parents: per-parentRef status of routes.
	Parents []Parent `json:"parents,omitempty"`
	// Listeners: per-listener status of Gateways.
	Listeners []Listener `json:"listeners,omitempty"`
	// AttachedListenerSets etc. are not modelled yet.
}

// ParentRef mirrors the Gateway API ParentReference.
type ParentRef struct {
	Group       string `json:"group,omitempty"`
	Kind        string `json:"kind,omitempty"`
	Namespace   string `json:"namespace,omitempty"`
	Name        string `json:"name"`
	SectionName string `json:"sectionName,omitempty"`
	Port        int32  `json:"port,omitempty"`
}

// Parent is a route's status for one parentRef.
type Parent struct {
	ParentRef      ParentRef   `json:"parentRef"`
	ControllerName string      `json:"controllerName"`
	Conditions     []Condition `json:"conditions"`
}

// Listener is a Gateway listener's status.
type Listener struct {
	Name           string      `json:"name"`
	SupportedKinds []string    `json:"supportedKinds"`
	AttachedRoutes int32       `json:"attachedRoutes"`
	Conditions     []Condition `json:"conditions"`
}

// Condition statuses.
const (
	True    = "True"
	False   = "False"
	Unknown = "Unknown"
)

// Rejected reports whether the object was not accepted, anywhere: its own
// Accepted/ResolvedRefs conditions, or any parent's or listener's.
func (o *Object) Rejected() bool {
	bad := func(cs []Condition) bool {
		return slices.ContainsFunc(cs, func(c Condition) bool {
			return failing(c)
		})
	}
	if bad(o.Conditions) {
		return true
	}
	for _, p := range o.Parents {
		if bad(p.Conditions) {
			return true
		}
	}
	for _, l := range o.Listeners {
		if bad(l.Conditions) {
			return true
		}
	}
	return false
}

// Sort orders objects by ref so that output is deterministic.
func Sort(objs []Object) {
	slices.SortFunc(objs, func(a, b Object) int { return a.ObjectRef.Compare(b.ObjectRef) })
}

// Problem describes the first failing condition, looking at the object, then
// its parents and listeners; "" when nothing failed.
func (o *Object) Problem() string {
	pick := func(prefix string, cs []Condition) string {
		for _, c := range cs {
			if failing(c) {
				return prefix + c.Type + "=" + c.Status + " " + c.Reason + ": " + strings.ReplaceAll(c.Message, "\n", "; ")
			}
		}
		return ""
	}
	if m := pick("", o.Conditions); m != "" {
		return m
	}
	for _, p := range o.Parents {
		if m := pick("parent "+p.ParentRef.Name+": ", p.Conditions); m != "" {
			return m
		}
	}
	for _, l := range o.Listeners {
		if m := pick("listener "+l.Name+": ", l.Conditions); m != "" {
			return m
		}
	}
	return ""
}

// failing reports whether a condition says the object (or part of it) is
// not in force: a negative Accepted/ResolvedRefs/Programmed, or a positive
// Conflicted/PartiallyInvalid.
func failing(c Condition) bool {
	switch c.Type {
	case "Accepted", "ResolvedRefs", "Programmed":
		return c.Status == False
	case "Conflicted", "PartiallyInvalid":
		return c.Status == True
	case "ambit.dev/LoadBalancer": // an annotation that could not be used
		return c.Status == False
	}
	return false
}
