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

func TestClassifyHTTP(t *testing.T) {
	for _, tc := range []struct {
		in           string
		isHTTP, done bool
	}{
		{"", false, false},
		{"GE", false, false},
		{"GET ", true, true},
		{"DELETE /x HTTP/1.1", true, true},
		{"PRI * HTTP/2.0\r\n", true, true}, // HTTP/2 prior knowledge
		{" GET", false, true},
		{"get /", false, true},
		{"PING\r\n", false, true}, // redis inline command
		{"\x16\x03\x01", false, true},
		{"ABCDEFGHIJKLMNOPQ", false, true}, // longer than any method
	} {
		isHTTP, done := classifyHTTP([]byte(tc.in))
		if isHTTP != tc.isHTTP || done != tc.done {
			t.Errorf("classifyHTTP(%q) = %v, %v; want %v, %v", tc.in, isHTTP, done, tc.isHTTP, tc.done)
		}
	}
}
