package demo

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestChooseMode(t *testing.T) {
	works := func(context.Context) error { return nil }
	noNft := func(context.Context) error { return errors.New("nftables: netlink: operation not supported") }
	for _, tc := range []struct {
		name    string
		want    Mode
		h       host
		mode    Mode
		why     string // fragment of the reason, or of the error when mode is ""
		wantErr bool
	}{
		{"root on Linux", ModeAuto, host{"linux", true, works}, ModeNetns, "transparent capture", false},
		{"empty means auto", "", host{"linux", true, works}, ModeNetns, "network namespaces", false},
		{"not root", ModeAuto, host{"linux", false, works}, ModeLoopback, "not root", false},
		{"not Linux", ModeAuto, host{"darwin", true, works}, ModeLoopback, "not Linux (darwin)", false},
		{"nftables missing falls back", ModeAuto, host{"linux", true, noNft}, ModeLoopback, "nftables capture is not available here (nftables: netlink: operation not supported); falling back", false},
		{"loopback asked for", ModeLoopback, host{"linux", true, noNft}, ModeLoopback, "--mode loopback", false},
		{"netns without nftables", ModeNetns, host{"linux", true, noNft}, "", "--mode netns: nftables capture is not available", true},
		{"netns without root", ModeNetns, host{"linux", false, works}, "", "--mode netns: not root", true},
		{"unknown mode", "bridge", host{"linux", true, works}, "", `--mode "bridge": use auto, netns or loopback`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mode, why, err := chooseMode(context.Background(), tc.want, tc.h)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), tc.why) {
					t.Fatalf("chooseMode = %s, %q, %v; want an error containing %q", mode, why, err, tc.why)
				}
				return
			}
			if err != nil || mode != tc.mode || !strings.Contains(why, tc.why) {
				t.Errorf("chooseMode = %s, %q, %v; want %s with a reason containing %q", mode, why, err, tc.mode, tc.why)
			}
		})
	}
}
