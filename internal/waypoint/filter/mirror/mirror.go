// Package mirror implements the RequestMirror filter's decision: whether
// this request is in the share (percent or fraction) to be copied to the
// mirror backend. Sending the copy is the proxy's job.
package mirror

import (
	"errors"

	"github.com/ambitmesh/ambit/internal/waypoint/filter"
	gatewayv1 "github.com/ambitmesh/ambit/proto/ambit/gateway/v1"
)

// Sample reports whether a request is mirrored: numerator/denominator of
// requests are, drawn from rnd. An unset share (0/0) mirrors everything,
// the spec's default; 0/n never mirrors and n/n always does without
// drawing.
func Sample(m *gatewayv1.Mirror, rnd filter.Rand) bool {
	num, den := uint64(m.GetNumerator()), uint64(m.GetDenominator())
	switch {
	case den == 0:
		return num == 0 || num >= 100 || rnd.Uint64N(100) < num
	case num == 0:
		return false
	case num >= den:
		return true
	}
	return rnd.Uint64N(den) < num
}

type mirrorFilter struct{ m *gatewayv1.Mirror }

func (mirrorFilter) Kind() string { return filter.KindRequestMirror }

func (f mirrorFilter) OnRequest(r *filter.Request) *filter.Reply {
	if Sample(f.m, r.Rand) {
		r.Mirrors = append(r.Mirrors, f.m.GetBackend())
	}
	return nil
}

func init() {
	filter.Register(filter.KindRequestMirror, func(f *gatewayv1.Filter) (filter.Filter, error) {
		m := f.GetRequestMirror()
		if m.GetBackend().GetService() == "" {
			return nil, errors.New("backend: a mirror needs a resolved Service backend")
		}
		if m.GetDenominator() != 0 && m.GetNumerator() > m.GetDenominator() {
			return nil, errors.New("share: numerator must not exceed denominator")
		}
		return mirrorFilter{m}, nil
	})
}
