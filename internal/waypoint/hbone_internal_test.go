package waypoint

import "testing"

// Istio's explicit protocol selection: appProtocol wins over the name;
// HTTP protocols and undeclared ports are served as HTTP.
func TestIsTCPPort(t *testing.T) {
	for _, tc := range []struct {
		name, appProtocol string
		tcp               bool
	}{
		{"http", "", false},
		{"http-web", "", false},
		{"grpc", "", false},
		{"", "kubernetes.io/h2c", false},
		{"web", "", false}, // no protocol declared
		{"", "", false},
		{"tcp", "", true},
		{"tcp-db", "", true},
		{"mysql", "", true},
		{"https", "", true},
		{"http", "tcp", true}, // appProtocol wins
		{"tcp", "http", false},
		{"", "mongo", true},
		{"", "example.com/custom", true}, // a declared protocol that is not HTTP
	} {
		if got := isTCPPort(tc.name, tc.appProtocol); got != tc.tcp {
			t.Errorf("isTCPPort(%q, %q) = %v, want %v", tc.name, tc.appProtocol, got, tc.tcp)
		}
	}
}
