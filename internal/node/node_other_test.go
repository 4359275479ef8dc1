//go:build !linux

package node_test

import "testing"

func enrolViaAdmin(t *testing.T, _ string) { t.Skip("in-pod capture needs Linux") }
