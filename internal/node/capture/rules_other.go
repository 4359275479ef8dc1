//go:build !linux

package capture

import "context"

// Install is unsupported outside Linux: it returns ErrUnsupported.
func Install(ctx context.Context, nsPath string, cfg Config) error { return ErrUnsupported }

// Remove is unsupported outside Linux: it returns ErrUnsupported.
func Remove(ctx context.Context, nsPath string, cfg Config) error { return ErrUnsupported }
