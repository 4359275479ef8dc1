package status

import "testing"

func TestRejectedAndProblem(t *testing.T) {
	ok := Condition{Type: "Accepted", Status: True, Reason: "Accepted"}
	tests := []struct {
		name    string
		obj     Object
		want    bool
		problem string
	}{
		{"accepted", Object{Conditions: []Condition{ok}}, false, ""},
		{"not accepted", Object{Conditions: []Condition{{Type: "Accepted", Status: False, Reason: "Invalid", Message: "a\nb"}}}, true, "Accepted=False Invalid: a; b"},
		{"unrelated false condition", Object{Conditions: []Condition{ok, {Type: "ambit.dev/WaypointBound", Status: False}}}, false, ""},
		{"parent refs unresolved", Object{Parents: []Parent{{ParentRef: ParentRef{Name: "gw"}, Conditions: []Condition{ok, {Type: "ResolvedRefs", Status: False, Reason: "BackendNotFound", Message: "m"}}}}}, true, "parent gw: ResolvedRefs=False BackendNotFound: m"},
		{"partially invalid", Object{Conditions: []Condition{ok, {Type: "PartiallyInvalid", Status: True, Reason: "UnsupportedValue", Message: "m"}}}, true, "PartiallyInvalid=True UnsupportedValue: m"},
		{"conflicted listener", Object{Listeners: []Listener{{Name: "l", Conditions: []Condition{{Type: "Conflicted", Status: True, Reason: "HostnameConflict", Message: "m"}}}}}, true, "listener l: Conflicted=True HostnameConflict: m"},
		{"not conflicted", Object{Listeners: []Listener{{Name: "l", Conditions: []Condition{{Type: "Conflicted", Status: False}}}}}, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.obj.Rejected(); got != tc.want {
				t.Errorf("Rejected() = %v, want %v", got, tc.want)
			}
			if got := tc.obj.Problem(); got != tc.problem {
				t.Errorf("Problem() = %q, want %q", got, tc.problem)
			}
		})
	}
}
