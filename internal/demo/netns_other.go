//go:build !linux

package demo

import "errors"

func netnsLayout() (*layout, error) {
	return nil, errors.New("demo: network namespaces need Linux")
}

func cleanLeftoverNamespaces(string, func(string, ...any)) error { return nil }
