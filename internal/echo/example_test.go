package echo_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ambitmesh/ambit/internal/echo"
	echov1 "github.com/ambitmesh/ambit/proto/ambit/echo/v1"
)

// An echo server on free loopback ports, asked once over HTTP and once over
// gRPC.
func Example() {
	srv := echo.New(echo.Options{
		HTTPAddress: "127.0.0.1:0",
		GRPCAddress: "127.0.0.1:0",
		Context:     echo.Context{Namespace: "demo", Pod: "echo-0", Service: "echo"},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	<-srv.Ready()

	resp, err := http.Get("http://" + srv.HTTPAddr().String() + "/hello?delay=10ms")
	if err != nil {
		panic(err)
	}
	var r echo.Response
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		panic(err)
	}
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	fmt.Println(r.Method, r.Path, r.Proto, r.Namespace, r.Pod, r.RemoteAddr != "")

	conn, err := grpc.NewClient(srv.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	out, err := echov1.NewEchoServiceClient(conn).Echo(context.Background(), &echov1.EchoRequest{Payload: []byte("hi")})
	if err != nil {
		panic(err)
	}
	conn.Close()
	a := out.GetAssertions()
	fmt.Println(a.GetFullyQualifiedMethod(), a.GetContext().GetServiceName(), string(out.GetRequest().GetPayload()), a.GetPeerAddress() != "")

	cancel()
	fmt.Println("Run:", <-done)
	// Output:
	// GET /hello?delay=10ms HTTP/1.1 demo echo-0 true
	// /ambit.echo.v1.EchoService/Echo echo hi true
	// Run: <nil>
}
