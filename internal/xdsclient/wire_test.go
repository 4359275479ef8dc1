package xdsclient

import (
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	envoydiscovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	discovery "github.com/ambitmesh/ambit/proto/ambit/xds/v1"
)

// envoyOf maps each message of ambit's delta xDS subset to the message it
// stands for on the wire.
var envoyOf = map[protoreflect.FullName]protoreflect.MessageDescriptor{
	"ambit.xds.v1.DeltaDiscoveryRequest":  (&envoydiscovery.DeltaDiscoveryRequest{}).ProtoReflect().Descriptor(),
	"ambit.xds.v1.DeltaDiscoveryResponse": (&envoydiscovery.DeltaDiscoveryResponse{}).ProtoReflect().Descriptor(),
	"ambit.xds.v1.Resource":               (&envoydiscovery.Resource{}).ProtoReflect().Descriptor(),
	"ambit.xds.v1.Node":                   (&core.Node{}).ProtoReflect().Descriptor(),
	"ambit.xds.v1.Status":                 (&rpcstatus.Status{}).ProtoReflect().Descriptor(),
}

// Every field of the subset has the number, name, kind and cardinality of
// its Envoy counterpart, message fields recursively: the two encode to the
// same bytes.
func TestSubsetMatchesEnvoyDescriptors(t *testing.T) {
	var check func(ours, theirs protoreflect.MessageDescriptor)
	check = func(ours, theirs protoreflect.MessageDescriptor) {
		fields := ours.Fields()
		if fields.Len() == 0 {
			t.Errorf("%s has no fields", ours.FullName())
		}
		for i := range fields.Len() {
			f := fields.Get(i)
			g := theirs.Fields().ByNumber(f.Number())
			if g == nil {
				t.Errorf("%s field %d (%s): %s has no field %d", ours.FullName(), f.Number(), f.Name(), theirs.FullName(), f.Number())
				continue
			}
			if f.Name() != g.Name() || f.Kind() != g.Kind() || f.Cardinality() != g.Cardinality() || f.IsMap() != g.IsMap() {
				t.Errorf("%s field %d: %s %v %v, Envoy's %s has %s %v %v", ours.FullName(), f.Number(),
					f.Name(), f.Kind(), f.Cardinality(), theirs.FullName(), g.Name(), g.Kind(), g.Cardinality())
				continue
			}
			switch {
			case f.IsMap():
				if f.MapKey().Kind() != g.MapKey().Kind() || f.MapValue().Kind() != g.MapValue().Kind() {
					t.Errorf("%s field %s: map types differ from %s's", ours.FullName(), f.Name(), theirs.FullName())
				}
			case f.Message() != nil:
				if e, ok := envoyOf[f.Message().FullName()]; ok {
					if e.FullName() != g.Message().FullName() {
						t.Errorf("%s field %s is %s, Envoy's is %s", ours.FullName(), f.Name(), e.FullName(), g.Message().FullName())
					}
					check(f.Message(), e)
				} else if f.Message().FullName() != g.Message().FullName() {
					t.Errorf("%s field %s is %s, Envoy's is %s", ours.FullName(), f.Name(), f.Message().FullName(), g.Message().FullName())
				}
			}
		}
	}
	for _, m := range []proto.Message{&discovery.DeltaDiscoveryRequest{}, &discovery.DeltaDiscoveryResponse{}} {
		d := m.ProtoReflect().Descriptor()
		check(d, envoyOf[d.FullName()])
	}
}

// Bytes round-trip both ways with every field set, and the method the client
// calls is the one Envoy's service defines.
func TestSubsetWireRoundTrip(t *testing.T) {
	meta, err := structpb.NewStruct(map[string]any{"cluster": "c1"})
	if err != nil {
		t.Fatal(err)
	}
	req := &discovery.DeltaDiscoveryRequest{
		Node:                     &discovery.Node{Id: "node/w1", Cluster: "c1", Metadata: meta, UserAgentName: "ambit", UserAgentVersion: "dev"},
		TypeUrl:                  "type.googleapis.com/ambit.workload.v1.Workload",
		ResourceNamesSubscribe:   []string{"*"},
		ResourceNamesUnsubscribe: []string{"shop/old"},
		InitialResourceVersions:  map[string]string{"shop/web-1": "3"},
		ResponseNonce:            "7",
		ErrorDetail:              &discovery.Status{Code: 3, Message: "bad"},
	}
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var envoyReq envoydiscovery.DeltaDiscoveryRequest
	if err := proto.Unmarshal(b, &envoyReq); err != nil {
		t.Fatal(err)
	}
	n := envoyReq.GetNode()
	if n.GetId() != "node/w1" || n.GetCluster() != "c1" || n.GetMetadata().GetFields()["cluster"].GetStringValue() != "c1" ||
		n.GetUserAgentName() != "ambit" || n.GetUserAgentVersion() != "dev" ||
		envoyReq.GetTypeUrl() != req.TypeUrl || envoyReq.GetResourceNamesSubscribe()[0] != "*" ||
		envoyReq.GetResourceNamesUnsubscribe()[0] != "shop/old" || envoyReq.GetInitialResourceVersions()["shop/web-1"] != "3" ||
		envoyReq.GetResponseNonce() != "7" || envoyReq.GetErrorDetail().GetCode() != 3 || envoyReq.GetErrorDetail().GetMessage() != "bad" {
		t.Errorf("Envoy read our request as %v", &envoyReq)
	}
	if len(envoyReq.ProtoReflect().GetUnknown()) != 0 {
		t.Errorf("Envoy's request has unknown fields: %x", envoyReq.ProtoReflect().GetUnknown())
	}

	payload, err := anypb.New(wrapperspb.String("A"))
	if err != nil {
		t.Fatal(err)
	}
	resp := &envoydiscovery.DeltaDiscoveryResponse{
		SystemVersionInfo: "v9", TypeUrl: payload.TypeUrl, Nonce: "8", RemovedResources: []string{"gone"},
		Resources: []*envoydiscovery.Resource{{Name: "a", Version: "2", Aliases: []string{"alias"}, Resource: payload}},
		// Fields outside the subset stay unknown to ambit and do no harm.
		ControlPlane: &core.ControlPlane{Identifier: "ambit-control"},
	}
	if b, err = proto.Marshal(resp); err != nil {
		t.Fatal(err)
	}
	var ours discovery.DeltaDiscoveryResponse
	if err := proto.Unmarshal(b, &ours); err != nil {
		t.Fatal(err)
	}
	r := ours.GetResources()
	if ours.GetSystemVersionInfo() != "v9" || ours.GetTypeUrl() != payload.TypeUrl || ours.GetNonce() != "8" ||
		len(ours.GetRemovedResources()) != 1 || ours.GetRemovedResources()[0] != "gone" || len(r) != 1 ||
		r[0].GetName() != "a" || r[0].GetVersion() != "2" || r[0].GetAliases()[0] != "alias" || !proto.Equal(r[0].GetResource(), payload) {
		t.Errorf("we read Envoy's response as %v", &ours)
	}

	method := envoydiscovery.AggregatedDiscoveryService_DeltaAggregatedResources_FullMethodName
	if method != deltaADSMethod {
		t.Errorf("deltaADSMethod = %q, Envoy's is %q", deltaADSMethod, method)
	}
}
