package telemetry

import (
	"io"
	"net"
	"testing"
)

// BenchmarkWrite measures the wrapper's per-Write cost over a connection
// whose Write does nothing, against the bare connection.
func BenchmarkWrite(b *testing.B) {
	m := Open(testLabels("bench-write"), endpoints)
	buf := make([]byte, 16<<10)
	for _, c := range []struct {
		name string
		conn net.Conn
	}{
		{"raw", nopConn{}},
		{"counted", CountConn(nopConn{}, m, ReadsAreRequest)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.conn.Write(buf)
			}
		})
	}
}

// BenchmarkWriteParallel: both copy directions of many connections share
// a label set (one counter); contention on it is the realistic worst case.
func BenchmarkWriteParallel(b *testing.B) {
	buf := make([]byte, 16<<10)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		c := CountConn(nopConn{}, Open(testLabels("bench-parallel"), endpoints), ReadsAreRequest)
		for pb.Next() {
			c.Write(buf)
		}
	})
}

// BenchmarkOpenFinish is the per-connection cost: labels bound (cached
// after the first connection), opened and closed counted, no access log.
func BenchmarkOpenFinish(b *testing.B) {
	l := testLabels("bench-open")
	b.ReportAllocs()
	for b.Loop() {
		Open(l, endpoints).Finish(nil, Result{})
	}
}

// BenchmarkSpliceCopy moves 64 MiB between loopback TCP sockets through a
// counted wrapper (spliced in 64 KiB chunks) and bare, for throughput.
func BenchmarkSpliceCopy(b *testing.B) {
	for _, counted := range []bool{false, true} {
		name := "raw"
		if counted {
			name = "counted"
		}
		b.Run(name, func(b *testing.B) {
			const size = 64 << 20
			chunk := make([]byte, 256<<10)
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				clientA, inA := tcpPair(b)
				outB, serverB := tcpPair(b)
				m := Open(testLabels("bench-splice"), endpoints)
				done := make(chan struct{})
				go func() {
					io.Copy(io.Discard, serverB)
					close(done)
				}()
				go func() {
					for sent := 0; sent < size; sent += len(chunk) {
						clientA.Write(chunk)
					}
					clientA.CloseWrite()
				}()
				if counted {
					io.Copy(CountConn(outB, m, ReadsAreResponse), inA)
				} else {
					io.Copy(outB, inA)
				}
				outB.CloseWrite()
				<-done
			}
		})
	}
}
