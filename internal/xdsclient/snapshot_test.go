package xdsclient

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	discovery "github.com/ambitmesh/ambit/proto/ambit/xds/v1"
)

var (
	strURL = TypeURLOf[*wrapperspb.StringValue]()
	intURL = TypeURLOf[*wrapperspb.Int64Value]()
)

// entry is a comparable digest of one resource.
type entry struct {
	Version string
	Message proto.Message
}

func digest(s *Snapshot) map[string]map[string]entry {
	out := map[string]map[string]entry{}
	for _, t := range s.TypeURLs() {
		out[t] = map[string]entry{}
		for name, r := range s.All(t) {
			out[t][name] = entry{r.Version, r.Message}
		}
	}
	return out
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func res(t *testing.T, name, version string, m proto.Message) *discovery.Resource {
	return &discovery.Resource{Name: name, Version: version, Resource: mustAny(t, m)}
}

func TestApplyDelta(t *testing.T) {
	const unregisteredURL = "type.googleapis.com/ambit.test.v1.NotLinkedIn"
	// base holds str a@1, b@1 and no ints; generation 1.
	base, err := applyDelta(newEmptySnapshot([]string{strURL, intURL, unregisteredURL}), &discovery.DeltaDiscoveryResponse{
		TypeUrl: strURL, Nonce: "1",
		Resources: []*discovery.Resource{res(t, "a", "1", wrapperspb.String("A")), res(t, "b", "1", wrapperspb.String("B"))},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	baseDigest := digest(base)

	manyEmpty := make([]*discovery.Resource, 15)
	for i := range manyEmpty {
		manyEmpty[i] = &discovery.Resource{Resource: mustAny(t, wrapperspb.String("x"))}
	}

	tests := []struct {
		name     string
		resp     *discovery.DeltaDiscoveryResponse
		validate func(*Snapshot) error
		want     map[string]map[string]entry // nil when an error is expected
		wantErr  []string
	}{
		{
			name: "update and add",
			resp: &discovery.DeltaDiscoveryResponse{TypeUrl: strURL, Resources: []*discovery.Resource{
				res(t, "b", "2", wrapperspb.String("B2")), res(t, "c", "1", wrapperspb.String("C")),
			}},
			want: map[string]map[string]entry{
				strURL:          {"a": {"1", wrapperspb.String("A")}, "b": {"2", wrapperspb.String("B2")}, "c": {"1", wrapperspb.String("C")}},
				intURL:          {},
				unregisteredURL: {},
			},
		},
		{
			name: "remove existing and unknown names",
			resp: &discovery.DeltaDiscoveryResponse{TypeUrl: strURL, RemovedResources: []string{"a", "never-had"}},
			want: map[string]map[string]entry{strURL: {"b": {"1", wrapperspb.String("B")}}, intURL: {}, unregisteredURL: {}},
		},
		{
			name: "other type leaves strings alone",
			resp: &discovery.DeltaDiscoveryResponse{TypeUrl: intURL, Resources: []*discovery.Resource{res(t, "n", "7", wrapperspb.Int64(7))}},
			want: map[string]map[string]entry{
				strURL:          baseDigest[strURL],
				intURL:          {"n": {"7", wrapperspb.Int64(7)}},
				unregisteredURL: {},
			},
		},
		{
			name: "payload-less resource is a TTL heartbeat and keeps what we hold",
			resp: &discovery.DeltaDiscoveryResponse{TypeUrl: strURL, Resources: []*discovery.Resource{{Name: "a", Version: "9"}}},
			want: baseDigest,
		},
		{
			name:     "validate sees the candidate and accepts",
			resp:     &discovery.DeltaDiscoveryResponse{TypeUrl: strURL, RemovedResources: []string{"b"}},
			validate: func(s *Snapshot) error { return checkLen(s, 1) },
			want:     map[string]map[string]entry{strURL: {"a": {"1", wrapperspb.String("A")}}, intURL: {}, unregisteredURL: {}},
		},
		{
			name:    "unsubscribed type",
			resp:    &discovery.DeltaDiscoveryResponse{TypeUrl: "type.googleapis.com/google.protobuf.BoolValue", Nonce: "5"},
			wantErr: []string{"did not subscribe", "google.protobuf.BoolValue"},
		},
		{
			name:    "empty name",
			resp:    &discovery.DeltaDiscoveryResponse{TypeUrl: strURL, Nonce: "6", Resources: []*discovery.Resource{{Resource: mustAny(t, wrapperspb.String("x"))}}},
			wantErr: []string{"rejected " + strURL + " (nonce 6)", "resources[0]: name is empty"},
		},
		{
			name: "duplicate name",
			resp: &discovery.DeltaDiscoveryResponse{TypeUrl: strURL, Resources: []*discovery.Resource{
				res(t, "d", "1", wrapperspb.String("x")), res(t, "d", "2", wrapperspb.String("y")),
			}},
			wantErr: []string{`resource "d": sent twice`},
		},
		{
			name:    "payload of another type",
			resp:    &discovery.DeltaDiscoveryResponse{TypeUrl: strURL, Resources: []*discovery.Resource{res(t, "n", "1", wrapperspb.Int64(1))}},
			wantErr: []string{`resource "n": payload type_url is "` + intURL + `"`},
		},
		{
			name: "undecodable payload",
			resp: &discovery.DeltaDiscoveryResponse{TypeUrl: strURL, Resources: []*discovery.Resource{{
				Name: "bad", Resource: &anypb.Any{TypeUrl: strURL, Value: []byte{0x0a, 0x01, 0xff}}, // field 1 = invalid UTF-8
			}}},
			wantErr: []string{`resource "bad": unpack`, "UTF-8"},
		},
		{
			name: "type not in the registry",
			resp: &discovery.DeltaDiscoveryResponse{TypeUrl: unregisteredURL, Resources: []*discovery.Resource{{
				Name: "x", Resource: &anypb.Any{TypeUrl: unregisteredURL},
			}}},
			wantErr: []string{`resource "x": unpack ` + unregisteredURL, "not found"},
		},
		{
			name:    "errors are bounded",
			resp:    &discovery.DeltaDiscoveryResponse{TypeUrl: strURL, Resources: manyEmpty},
			wantErr: []string{"resources[9]: name is empty", "and 5 more errors"},
		},
		{
			name:     "validate rejects",
			resp:     &discovery.DeltaDiscoveryResponse{TypeUrl: strURL, Nonce: "8", RemovedResources: []string{"a"}},
			validate: func(s *Snapshot) error { return checkLen(s, 2) },
			wantErr:  []string{"rejected " + strURL + " (nonce 8): validate: have 1 strings, want 2"},
		},
		{
			name:     "validate panics",
			resp:     &discovery.DeltaDiscoveryResponse{TypeUrl: strURL},
			validate: func(*Snapshot) error { panic("boom") },
			wantErr:  []string{"validate: panic: boom"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := applyDelta(base, tt.resp, tt.validate)
			if diff := cmp.Diff(baseDigest, digest(base), protocmp.Transform()); diff != "" {
				t.Fatalf("applyDelta modified its input snapshot (-before +after):\n%s", diff)
			}
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("applyDelta succeeded, want error containing %q", tt.wantErr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("applyDelta: %v", err)
			}
			if diff := cmp.Diff(tt.want, digest(got), protocmp.Transform()); diff != "" {
				t.Errorf("snapshot (-want +got):\n%s", diff)
			}
			if got.Generation() != base.Generation()+1 {
				t.Errorf("generation %d, want %d", got.Generation(), base.Generation()+1)
			}
			if !got.TypeSynced(tt.resp.GetTypeUrl()) {
				t.Errorf("TypeSynced(%s) = false after an accepted response", tt.resp.GetTypeUrl())
			}
		})
	}
}

func checkLen(s *Snapshot, n int) error {
	if got := s.Len(strURL); got != n {
		return fmt.Errorf("have %d strings, want %d", got, n)
	}
	return nil
}

func TestSnapshotAccessors(t *testing.T) {
	s := newEmptySnapshot([]string{strURL, intURL})
	if s.Synced() || s.Generation() != 0 {
		t.Fatalf("empty snapshot: Synced=%v Generation=%d, want false 0", s.Synced(), s.Generation())
	}
	s, err := applyDelta(s, &discovery.DeltaDiscoveryResponse{TypeUrl: strURL, Resources: []*discovery.Resource{
		res(t, "z", "1", wrapperspb.String("Z")), res(t, "a", "2", wrapperspb.String("A")),
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Synced() {
		t.Errorf("Synced() = true with no int response yet")
	}
	s, err = applyDelta(s, &discovery.DeltaDiscoveryResponse{TypeUrl: intURL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Synced() {
		t.Errorf("Synced() = false after a response for every type")
	}
	if diff := cmp.Diff([]string{"a", "z"}, s.Names(strURL)); diff != "" {
		t.Errorf("Names (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"a": "2", "z": "1"}, s.Versions(strURL)); diff != "" {
		t.Errorf("Versions (-want +got):\n%s", diff)
	}
	if m, ok := Get[*wrapperspb.StringValue](s, "z"); !ok || m.GetValue() != "Z" {
		t.Errorf("Get[StringValue](z) = %v, %v; want Z, true", m, ok)
	}
	if _, ok := Get[*wrapperspb.Int64Value](s, "z"); ok {
		t.Errorf("Get[Int64Value](z) found a string resource")
	}
	got := map[string]string{}
	for name, m := range All[*wrapperspb.StringValue](s) {
		got[name] = m.GetValue()
	}
	if diff := cmp.Diff(map[string]string{"a": "A", "z": "Z"}, got); diff != "" {
		t.Errorf("All (-want +got):\n%s", diff)
	}
	if TypeURLOf[*wrapperspb.StringValue]() != "type.googleapis.com/google.protobuf.StringValue" {
		t.Errorf("TypeURLOf = %q", TypeURLOf[*wrapperspb.StringValue]())
	}
}

// TestApplyDeltaSequence applies a long random sequence of deltas to a
// snapshot of a few thousand resources, with some responses NACKed after
// part of them was applied to the candidate (a bad payload at the end, or
// Validate refusing), and checks after every step that each snapshot taken
// so far still holds exactly what it held when it was current: candidates
// share structure with their parents, so this is what keeps them immutable.
func TestApplyDeltaSequence(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	type held struct {
		s    *Snapshot
		want map[string]string // name -> version
	}
	cur := newEmptySnapshot([]string{strURL, intURL})
	want := map[string]string{}
	var history []held
	const names = 2000
	name := func() string { return fmt.Sprintf("ns-%02d/wl-%04d", rng.IntN(20), rng.IntN(names/20)) }
	errRefused := errors.New("refused by the test")

	for step := range 200 {
		resp := &discovery.DeltaDiscoveryResponse{TypeUrl: strURL, Nonce: fmt.Sprint(step)}
		next := maps.Clone(want)
		size := 1 + rng.IntN(5)
		if step == 0 {
			size = names // the initial push
		}
		seen := map[string]bool{}
		for range size {
			n := name()
			if seen[n] {
				continue
			}
			seen[n] = true
			if step > 0 && rng.IntN(4) == 0 {
				resp.RemovedResources = append(resp.RemovedResources, n)
				delete(next, n)
				continue
			}
			v := fmt.Sprintf("%d-%s", step, n)
			resp.Resources = append(resp.Resources, res(t, n, v, wrapperspb.String(v)))
			next[n] = v
		}
		var validate func(*Snapshot) error
		nack := step > 0 && rng.IntN(5) == 0
		if nack {
			if rng.IntN(2) == 0 {
				resp.Resources = append(resp.Resources, &discovery.Resource{Name: "bad", Resource: mustAny(t, wrapperspb.Int64(1))})
			} else {
				validate = func(*Snapshot) error { return errRefused }
			}
		}

		got, err := applyDelta(cur, resp, validate)
		switch {
		case nack && err == nil:
			t.Fatalf("step %d: applyDelta accepted a response it should have refused", step)
		case !nack && err != nil:
			t.Fatalf("step %d: applyDelta: %v", step, err)
		case !nack:
			cur, want = got, next
			history = append(history, held{cur, want})
		}

		if step%25 != 24 { // comparing every held snapshot is O(history * size)
			continue
		}
		for i, h := range history {
			if diff := cmp.Diff(h.want, h.s.Versions(strURL)); diff != "" {
				t.Fatalf("step %d: snapshot %d (generation %d) changed (-held +now):\n%s", step, i, h.s.Generation(), diff)
			}
		}
	}

	if diff := cmp.Diff(slices.Sorted(maps.Keys(want)), cur.Names(strURL)); diff != "" {
		t.Errorf("Names (-want +got):\n%s", diff)
	}
	if cur.Len(strURL) != len(want) {
		t.Errorf("Len = %d, want %d", cur.Len(strURL), len(want))
	}
	for n, v := range want {
		m, ok := Get[*wrapperspb.StringValue](cur, n)
		if !ok || m.GetValue() != v {
			t.Fatalf("Get(%q) = %v, %v; want %q", n, m, ok, v)
		}
	}
}
