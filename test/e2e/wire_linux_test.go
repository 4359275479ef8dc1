//go:build linux

package e2e

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambitmesh/ambit/internal/node/netns"
	"github.com/ambitmesh/ambit/internal/node/netns/netnstest"
)

// segment is one captured IPv4 TCP segment.
type segment struct {
	src, dst netip.AddrPort
	payload  []byte
}

// sniffer records the TCP segments crossing one interface (an AF_PACKET
// socket, so the lab needs no tcpdump).
type sniffer struct {
	fd   int
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	segs []segment
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// sniff starts capturing on ifName inside ns; Stop returns what it saw.
func sniff(t *testing.T, ns netnstest.NS, ifName string) *sniffer {
	t.Helper()
	s := &sniffer{fd: -1, stop: make(chan struct{}), done: make(chan struct{})}
	err := netns.Do(ns.Path, func() error {
		// The socket belongs to the namespace it was created in.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		s.fd = fd
		ifi, err := net.InterfaceByName(ifName)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			return err
		}
		// A receive timeout lets the reader notice Stop.
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50_000})
	})
	if err != nil {
		if s.fd >= 0 {
			unix.Close(s.fd)
		}
		t.Fatalf("packet capture on %s in %s: %v", ifName, ns.Name, err)
	}
	go s.read()
	t.Cleanup(func() { s.Stop() })
	return s
}

func (s *sniffer) read() {
	defer close(s.done)
	buf := make([]byte, 65536)
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		n, _, err := unix.Recvfrom(s.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		if seg, ok := parseFrame(buf[:n]); ok {
			s.mu.Lock()
			s.segs = append(s.segs, seg)
			s.mu.Unlock()
		}
	}
}

// Stop ends the capture (idempotent) and returns the segments seen.
func (s *sniffer) Stop() []segment {
	select {
	case <-s.stop:
	default:
		close(s.stop)
		<-s.done
		unix.Close(s.fd)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.segs
}

// parseFrame reads an Ethernet II / IPv4 / TCP frame.
func parseFrame(f []byte) (segment, bool) {
	if len(f) < 14+20 || binary.BigEndian.Uint16(f[12:14]) != 0x0800 {
		return segment{}, false
	}
	ip := f[14:]
	ihl := int(ip[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if ip[0]>>4 != 4 || ip[9] != unix.IPPROTO_TCP || ihl < 20 || total > len(ip) || total < ihl+20 {
		return segment{}, false
	}
	src, _ := netip.AddrFromSlice(ip[12:16])
	dst, _ := netip.AddrFromSlice(ip[16:20])
	tcp := ip[ihl:total]
	off := int(tcp[12]>>4) * 4
	if off < 20 || off > len(tcp) {
		return segment{}, false
	}
	return segment{
		src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp[0:2])),
		dst:     netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:4])),
		payload: append([]byte(nil), tcp[off:]...),
	}, true
}

// waitSegment polls the running capture until match holds for a segment.
func (s *sniffer) waitSegment(within time.Duration, match func(segment) bool) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		for _, seg := range s.segs {
			if match(seg) {
				s.mu.Unlock()
				return true
			}
		}
		s.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	return false
}
