package xdsclient

import (
	"errors"
	"fmt"
	"iter"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/ambitmesh/ambit/internal/xdsclient/internal/pmap"
	discovery "github.com/ambitmesh/ambit/proto/ambit/xds/v1"
)

// typeURLPrefix is the prefix every ambit (and Envoy) resource type URL uses.
const typeURLPrefix = "type.googleapis.com/"

// Resource is one resource held in a Snapshot.
type Resource struct {
	Name string
	// Version is the opaque per-resource version the control plane sent; it is
	// what the client reports back in initial_resource_versions.
	Version string
	// Message is the unpacked payload. It is shared by every snapshot that
	// holds this version of the resource and must not be modified.
	Message proto.Message
}

// typeState is the content of one type URL. Snapshots share typeStates for
// types a response did not touch, and the resources of a touched type are a
// persistent map: the next snapshot copies only the trie nodes on the paths
// to the changed names (a few per name) and shares the rest with the current
// one, so applying a delta costs O(delta * log n), not O(n).
type typeState struct {
	synced    bool // at least one response for this type was accepted
	resources pmap.Map[Resource]
}

// Snapshot is an immutable view of everything the client holds. Nothing in it
// (including the proto messages) may be modified by readers.
type Snapshot struct {
	generation uint64
	types      map[string]*typeState
}

func newEmptySnapshot(typeURLs []string) *Snapshot {
	s := &Snapshot{types: make(map[string]*typeState, len(typeURLs))}
	for _, t := range typeURLs {
		s.types[t] = &typeState{}
	}
	return s
}

// Generation is 0 for the empty snapshot the client starts with and increases
// by one with every accepted response.
func (s *Snapshot) Generation() uint64 { return s.generation }

// TypeURLs returns the subscribed type URLs, sorted.
func (s *Snapshot) TypeURLs() []string { return slices.Sorted(maps.Keys(s.types)) }

// Synced reports whether an accepted response has arrived for every
// subscribed type, i.e. the snapshot reflects a complete initial config.
func (s *Snapshot) Synced() bool {
	for _, ts := range s.types {
		if !ts.synced {
			return false
		}
	}
	return true
}

// TypeSynced reports whether an accepted response has arrived for typeURL.
func (s *Snapshot) TypeSynced(typeURL string) bool {
	ts := s.types[typeURL]
	return ts != nil && ts.synced
}

// Len is the number of resources of typeURL.
func (s *Snapshot) Len(typeURL string) int {
	if ts := s.types[typeURL]; ts != nil {
		return ts.resources.Len()
	}
	return 0
}

// Get returns the resource typeURL/name.
func (s *Snapshot) Get(typeURL, name string) (Resource, bool) {
	ts := s.types[typeURL]
	if ts == nil {
		return Resource{}, false
	}
	return ts.resources.Get(name)
}

// Names returns the names of the resources of typeURL, sorted.
func (s *Snapshot) Names(typeURL string) []string {
	ts := s.types[typeURL]
	if ts == nil {
		return nil
	}
	return slices.Sorted(ts.resources.Keys())
}

// All iterates over the resources of typeURL in no particular order (sorting
// would cost O(n log n) per call on large meshes; use Names for order).
func (s *Snapshot) All(typeURL string) iter.Seq2[string, Resource] {
	return func(yield func(string, Resource) bool) {
		ts := s.types[typeURL]
		if ts == nil {
			return
		}
		for name, r := range ts.resources.All() {
			if !yield(name, r) {
				return
			}
		}
	}
}

// Versions returns a fresh map name -> version for typeURL.
func (s *Snapshot) Versions(typeURL string) map[string]string {
	ts := s.types[typeURL]
	if ts == nil {
		return nil
	}
	out := make(map[string]string, ts.resources.Len())
	for name, r := range ts.resources.All() {
		out[name] = r.Version
	}
	return out
}

// TypeURLOf returns the type URL of messages of type T, e.g.
// "type.googleapis.com/ambit.workload.v1.Workload" for *workloadv1.Workload.
func TypeURLOf[T proto.Message]() string {
	var zero T
	return typeURLPrefix + string(zero.ProtoReflect().Descriptor().FullName())
}

// Get returns the resource name of type T from s.
func Get[T proto.Message](s *Snapshot, name string) (T, bool) {
	r, ok := s.Get(TypeURLOf[T](), name)
	if !ok {
		var zero T
		return zero, false
	}
	m, ok := r.Message.(T)
	return m, ok
}

// All iterates over the resources of type T in s, in no particular order.
func All[T proto.Message](s *Snapshot) iter.Seq2[string, T] {
	return func(yield func(string, T) bool) {
		for name, r := range s.All(TypeURLOf[T]()) {
			m, ok := r.Message.(T)
			if !ok {
				continue
			}
			if !yield(name, m) {
				return
			}
		}
	}
}

// maxReportedErrors bounds how many per-resource errors go into one NACK so
// error_detail stays readable (and small) when a whole push is broken.
const maxReportedErrors = 10

// applyDelta returns the snapshot that results from applying resp to cur, or
// an error describing every problem found (cur is never modified).
func applyDelta(cur *Snapshot, resp *discovery.DeltaDiscoveryResponse, validate func(*Snapshot) error) (*Snapshot, error) {
	typeURL := resp.GetTypeUrl()
	old, ok := cur.types[typeURL]
	if !ok {
		return nil, fmt.Errorf("xdsclient: response has type_url %q, which this client did not subscribe to (subscribed: %s)",
			typeURL, strings.Join(cur.TypeURLs(), ", "))
	}

	// The builder never modifies old.resources: a NACK below simply drops it.
	next := old.resources.Builder()
	for _, name := range resp.GetRemovedResources() {
		next.Delete(name)
	}

	var errs []error
	seen := make(map[string]bool, len(resp.GetResources()))
	for i, r := range resp.GetResources() {
		name := r.GetName()
		switch {
		case name == "":
			errs = append(errs, fmt.Errorf("resources[%d]: name is empty: every resource needs a unique name", i))
			continue
		case seen[name]:
			errs = append(errs, fmt.Errorf("resource %q: sent twice in one response: names must be unique per type", name))
			continue
		}
		seen[name] = true
		if r.GetResource() == nil {
			// A Resource without payload is a TTL heartbeat: what we hold stays.
			continue
		}
		if got := r.GetResource().GetTypeUrl(); got != typeURL {
			errs = append(errs, fmt.Errorf("resource %q: payload type_url is %q, want %q (the response's type_url)", name, got, typeURL))
			continue
		}
		msg, err := anypb.UnmarshalNew(r.GetResource(), proto.UnmarshalOptions{Resolver: protoregistry.GlobalTypes})
		if err != nil {
			errs = append(errs, fmt.Errorf("resource %q: unpack %s: %w", name, typeURL, err))
			continue
		}
		next.Set(name, Resource{Name: name, Version: r.GetVersion(), Message: msg})
	}
	if len(errs) > 0 {
		return nil, joinBounded("xdsclient: rejected "+typeURL+" (nonce "+resp.GetNonce()+")", errs)
	}

	cand := &Snapshot{generation: cur.generation + 1, types: maps.Clone(cur.types)}
	cand.types[typeURL] = &typeState{synced: true, resources: next.Map()}
	if validate != nil {
		if err := safeValidate(validate, cand); err != nil {
			return nil, fmt.Errorf("xdsclient: rejected %s (nonce %s): validate: %w", typeURL, resp.GetNonce(), err)
		}
	}
	return cand, nil
}

func joinBounded(prefix string, errs []error) error {
	shown := errs
	if len(shown) > maxReportedErrors {
		shown = append(slices.Clip(errs[:maxReportedErrors]), fmt.Errorf("and %d more errors", len(errs)-maxReportedErrors))
	}
	return fmt.Errorf("%s: %w", prefix, errors.Join(shown...))
}

// safeValidate turns a panicking validator into a NACK: a bug in one check must
// not take the proxy (and all its traffic) down.
func safeValidate(validate func(*Snapshot) error, s *Snapshot) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return validate(s)
}
