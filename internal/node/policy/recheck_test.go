package policy

import (
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	authzv1 "github.com/ambitmesh/ambit/proto/ambit/authorization/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRecheck(t *testing.T) {
	live := map[string]Conn{
		"sleep-mtls":  conn(),
		"sleep-plain": conn(plaintext),
		"dev":         conn(identity_("spiffe://cluster.local/ns/dev/sa/x")),
		"other-dst":   conn(dst("baz", "db")),
		"ssh":         conn(port(22)),
	}
	tests := []struct {
		name     string
		policies []*authzv1.Authorization
		want     map[string]Decision
	}{
		{"no policies revoke nothing", nil, map[string]Decision{}},
		{"require mTLS in bar", []*authzv1.Authorization{nsPolicy("bar", "mtls", deny, from(&authzv1.Source{NotPrincipals: []string{"*"}}))},
			map[string]Decision{"sleep-plain": deniedBy("bar", "mtls")}},
		{"allow only foo in bar", []*authzv1.Authorization{nsPolicy("bar", "foo-only", allow, from(&authzv1.Source{Namespaces: []string{"foo"}}))},
			map[string]Decision{"sleep-plain": noMatch, "dev": noMatch}},
		{"mesh-wide no ssh", []*authzv1.Authorization{meshPolicy("no-ssh", deny, to(&authzv1.Operation{Ports: []uint32{22}}))},
			map[string]Decision{"ssh": deniedBy("ambit-system", "no-ssh")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := map[string]Decision{}
			for _, r := range Recheck(New(tt.policies), maps.All(live)) {
				got[r.Key] = r.Decision
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("revoked (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAuthorizerUpdateRevokes(t *testing.T) {
	a := NewAuthorizer(nil)
	revoked := map[string][]Decision{}
	admit := func(name string, c Conn) func() {
		t.Helper()
		d, release := a.Admit(c, func(d Decision) { revoked[name] = append(revoked[name], d) })
		if !d.Allowed {
			t.Fatalf("Admit(%s) = %v, want allowed", name, d)
		}
		return release
	}
	admit("mtls", conn())
	releasePlain := admit("plain", conn(plaintext))
	admit("plain2", conn(plaintext, srcIP("10.0.9.9")))
	releasePlain()
	releasePlain() // idempotent
	if got := a.Live(); got != 2 {
		t.Fatalf("Live() = %d after one release, want 2", got)
	}

	requireMTLS := New([]*authzv1.Authorization{nsPolicy("bar", "mtls", deny, from(&authzv1.Source{NotPrincipals: []string{"*"}}))})
	if n := a.Update(requireMTLS); n != 1 {
		t.Errorf("Update revoked %d, want 1 (plain2; plain was released)", n)
	}
	want := map[string][]Decision{"plain2": {deniedBy("bar", "mtls")}}
	if diff := cmp.Diff(want, revoked); diff != "" {
		t.Errorf("revocations (-want +got):\n%s", diff)
	}
	if a.Engine() != requireMTLS {
		t.Error("Engine() is not the engine of the last Update")
	}
	// The same engine again revokes nothing more: plain2 is no longer live.
	if n := a.Update(requireMTLS); n != 0 {
		t.Errorf("second Update revoked %d, want 0", n)
	}
	if got := a.Live(); got != 1 {
		t.Errorf("Live() = %d, want 1", got)
	}

	// A denied connection is neither admitted nor tracked.
	d, release := a.Admit(conn(plaintext), func(Decision) { t.Error("revoke called for a connection that was never admitted") })
	release()
	if d != deniedBy("bar", "mtls") {
		t.Errorf("Admit(plaintext) = %v, want denied by bar/mtls", d)
	}
	if got := a.Check(conn(plaintext)); got != d {
		t.Errorf("Check = %v, want %v", got, d)
	}
}

// TestAuthorizerConcurrent admits connections while policies flip between
// allow-all and deny-all: at the end (deny-all in force) every connection
// admitted and not released must have been revoked exactly once, whatever
// the interleaving.
func TestAuthorizerConcurrent(t *testing.T) {
	allowAll := New(nil)
	denyAll := New([]*authzv1.Authorization{meshPolicy("deny-all", deny, anyRule)})
	a := NewAuthorizer(allowAll)

	const workers, perWorker = 8, 200
	type state struct {
		admitted bool
		revokes  atomic.Int32
	}
	states := make([]*state, workers*perWorker)
	for i := range states {
		states[i] = &state{}
	}
	stop := make(chan struct{})
	updaterDone := make(chan struct{})
	go func() {
		defer close(updaterDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				a.Update(denyAll)
			} else {
				a.Update(allowAll)
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				s := states[w*perWorker+i]
				d, _ := a.Admit(conn(), func(Decision) { s.revokes.Add(1) })
				s.admitted = d.Allowed
			}
		})
	}
	wg.Wait()
	close(stop)
	<-updaterDone
	a.Update(denyAll)

	admitted := 0
	for i, s := range states {
		want := int32(0)
		if s.admitted {
			want = 1
			admitted++
		}
		if got := s.revokes.Load(); got != want {
			t.Errorf("connection %d (admitted %v): revoked %d times, want %d", i, s.admitted, got, want)
		}
	}
	if got := a.Live(); got != 0 {
		t.Errorf("Live() = %d after deny-all, want 0", got)
	}
	t.Logf("%d of %d connections admitted", admitted, len(states))
}

func TestRecheckOrder(t *testing.T) {
	e := New([]*authzv1.Authorization{meshPolicy("deny-all", deny, anyRule)})
	live := []Conn{conn(), conn(plaintext), conn(port(1))}
	var keys []int
	for _, r := range Recheck(e, slices.All(live)) {
		keys = append(keys, r.Key)
	}
	if diff := cmp.Diff([]int{0, 1, 2}, keys); diff != "" {
		t.Errorf("revoked keys (-want +got):\n%s", diff)
	}
}
