//go:build !linux

package demo

import (
	"context"

	"github.com/ambitmesh/ambit/internal/node/capture"
)

func probeCapture(context.Context) error { return capture.ErrUnsupported }

func isRoot() bool { return false }
