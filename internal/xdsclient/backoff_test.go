package xdsclient

import (
	"strings"
	"testing"
	"time"
)

func TestBackoffCeiling(t *testing.T) {
	custom := Backoff{Initial: 100 * time.Millisecond, Max: 2 * time.Second, Multiplier: 3}
	tests := []struct {
		name    string
		b       Backoff
		attempt int
		want    time.Duration
	}{
		{"defaults first", Backoff{}, 0, 500 * time.Millisecond},
		{"defaults doubles", Backoff{}, 1, time.Second},
		{"defaults fifth", Backoff{}, 5, 16 * time.Second},
		{"defaults capped", Backoff{}, 6, 30 * time.Second},
		{"defaults huge attempt does not overflow", Backoff{}, 1 << 30, 30 * time.Second},
		{"custom first", custom, 0, 100 * time.Millisecond},
		{"custom multiplier", custom, 2, 900 * time.Millisecond},
		{"custom capped", custom, 3, 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.b.Ceiling(tt.attempt); got != tt.want {
				t.Errorf("Ceiling(%d) = %v, want %v", tt.attempt, got, tt.want)
			}
		})
	}
}

func TestBackoffDelayBoundsAndJitter(t *testing.T) {
	b := Backoff{Initial: 10 * time.Millisecond, Max: time.Second}
	const samples = 2000
	for attempt := range 12 {
		ceil := b.Ceiling(attempt)
		var low, high int
		distinct := map[time.Duration]bool{}
		for range samples {
			d := b.Delay(attempt)
			if d < 0 || d > ceil {
				t.Fatalf("Delay(%d) = %v, want within [0, %v]", attempt, d, ceil)
			}
			distinct[d] = true
			if d < ceil/4 {
				low++
			}
			if d > ceil*3/4 {
				high++
			}
		}
		// Full jitter spreads over the whole window: with 2000 uniform draws the
		// chance that either quarter stays empty is (3/4)^2000, i.e. never.
		if low == 0 || high == 0 {
			t.Errorf("attempt %d: %d draws below %v and %d above %v, want both quarters hit (full jitter)", attempt, low, ceil/4, high, ceil*3/4)
		}
		if len(distinct) < samples/2 {
			t.Errorf("attempt %d: only %d distinct delays in %d draws, want jitter", attempt, len(distinct), samples)
		}
	}
}

func TestBackoffDelayUsesWholeRange(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 4 * time.Second}
	tests := []struct {
		name    string
		attempt int
		pick    func(n int64) int64
		want    time.Duration
	}{
		{"lowest draw", 0, func(int64) int64 { return 0 }, 0},
		{"highest draw reaches ceiling", 1, func(n int64) int64 { return n - 1 }, 2 * time.Second},
		{"highest draw capped", 10, func(n int64) int64 { return n - 1 }, 4 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := b.delay(tt.attempt, tt.pick); got != tt.want {
				t.Errorf("delay(%d) = %v, want %v", tt.attempt, got, tt.want)
			}
		})
	}
}

func TestBackoffValidate(t *testing.T) {
	tests := []struct {
		name    string
		b       Backoff
		wantErr string
	}{
		{"zero is defaults", Backoff{}, ""},
		{"negative initial", Backoff{Initial: -1}, "Backoff.Initial"},
		{"negative max", Backoff{Max: -1}, "Backoff.Max is"},
		{"multiplier below one", Backoff{Multiplier: 0.5}, "Backoff.Multiplier"},
		{"negative stable", Backoff{StableAfter: -time.Second}, "Backoff.StableAfter"},
		{"max below initial", Backoff{Initial: time.Minute, Max: time.Second}, "below Backoff.Initial"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.b.validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}
