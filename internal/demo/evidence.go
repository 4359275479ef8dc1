package demo

import (
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// logKV matches key=value pairs of slog's text format (values quoted when they need it).
var logKV = regexp.MustCompile(`([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)`)

// parseLogLine reads one slog text line into its keys (nested groups keep their dotted names,
// e.g. "src.identity").
func parseLogLine(line string) map[string]string {
	out := map[string]string{}
	for _, m := range logKV.FindAllStringSubmatch(line, -1) {
		v := m[2]
		if strings.HasPrefix(v, `"`) {
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
		}
		out[m[1]] = v
	}
	return out
}

// accessLines returns the "connection complete" lines (ztunnel's access log format) of a node
// proxy's output whose fields have every given value.
func accessLines(output string, want map[string]string) []map[string]string {
	var out []map[string]string
lines:
	for _, line := range strings.Split(output, "\n") {
		if !strings.Contains(line, `msg="connection complete"`) {
			continue
		}
		f := parseLogLine(line)
		for k, v := range want {
			if f[k] != v {
				continue lines
			}
		}
		out = append(out, f)
	}
	return out
}

// splitBounds is the range of hits out of n a weight p may land in without the split being wrong:
// the binomial mean ± sigmas standard deviations (5 sigmas: a correct split falls outside about
// once in 1.7 million runs), clipped to [0, n].
func splitBounds(n int, p, sigmas float64) (lo, hi int) {
	mean := float64(n) * p
	sd := math.Sqrt(float64(n) * p * (1 - p))
	lo = max(0, int(math.Ceil(mean-sigmas*sd)))
	hi = min(n, int(math.Floor(mean+sigmas*sd)))
	return lo, hi
}

// percentile of samples (sorted in place), nearest-rank.
func percentile(samples []time.Duration, q float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	slices.Sort(samples)
	i := int(math.Ceil(q*float64(len(samples)))) - 1
	return samples[min(max(i, 0), len(samples)-1)]
}

var destWorkload = regexp.MustCompile(`[{,]destination_workload="([^"]*)"`)

// waypointRequests sums a waypoint's istio_requests_total (Prometheus text format) of 200
// responses by destination_workload.
func waypointRequests(metrics string) map[string]int {
	out := map[string]int{}
	for _, line := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(line, "istio_requests_total{") || !strings.Contains(line, `reporter="waypoint"`) ||
			!strings.Contains(line, `response_code="200"`) {
			continue
		}
		m := destWorkload.FindStringSubmatch(line)
		i := strings.LastIndexByte(line, ' ')
		if m == nil || i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[m[1]] += int(v)
		}
	}
	return out
}
