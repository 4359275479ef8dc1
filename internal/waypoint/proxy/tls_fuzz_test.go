package proxy

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"testing"
)

// bytesConn reads from b and discards writes.
type bytesConn struct {
	net.Conn
	r io.Reader
	w bytes.Buffer
}

func (c *bytesConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *bytesConn) Write(p []byte) (int, error) { return c.w.Write(p) }
func (c *bytesConn) Close() error                { return nil }

// clientHello returns the first flight of a real TLS client for sni.
func clientHello(t testing.TB, sni string) []byte {
	c := &bytesConn{r: bytes.NewReader(nil)}
	// Only the bytes are used: nothing is verified.
	conf := &tls.Config{ServerName: sni, NextProtos: []string{"h2", "http/1.1"}, InsecureSkipVerify: sni == ""}
	_ = tls.Client(c, conf).Handshake()
	if c.w.Len() == 0 {
		t.Fatal("the TLS client wrote no ClientHello")
	}
	return c.w.Bytes()
}

// The server name is read, and the bytes consumed plus those left on the
// connection are the stream as sent: nothing lost, nothing doubled.
func TestPeekClientHello(t *testing.T) {
	hello := clientHello(t, "DB.Example.com")
	in := append(append([]byte{}, hello...), "rest of the stream"...)
	r := bytes.NewReader(in)
	sni, got, err := peekClientHello(&bytesConn{r: r})
	if err != nil || sni != "db.example.com" {
		t.Fatalf("peek: %q, %v; want db.example.com", sni, err)
	}
	left, _ := io.ReadAll(r)
	if !bytes.Equal(append(got, left...), in) || len(got) < len(hello) {
		t.Errorf("replay (%d bytes) + rest on the connection (%d) is not the stream sent (%d, ClientHello %d)", len(got), len(left), len(in), len(hello))
	}
}

// FuzzPeekClientHello: any bytes end in an error or a server name with
// the exact bytes read to replay; never a panic or a hang.
func FuzzPeekClientHello(f *testing.F) {
	f.Add(clientHello(f, "a.example.com"))
	f.Add(clientHello(f, ""))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte{0x16, 0x03, 0x01, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		_, got, err := peekClientHello(&bytesConn{r: r})
		left, _ := io.ReadAll(r)
		if err == nil && !bytes.Equal(append(got, left...), in) {
			t.Fatalf("replay %x plus the rest is not the input", got)
		}
	})
}
