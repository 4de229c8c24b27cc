// grpcclient is the Go side of roster's grpc-go interop test: a grpc-go client with the
// round_robin balancer resolving `etcd:///<target>` through etcd's naming resolver
// (go.etcd.io/etcd/clientv3/naming/resolver), exactly as a Go service would call a gRPC service
// registered in etcd's naming/endpoints format.
//
// It calls the unary method /roster.interop.Echo/Who (raw bytes in, the answering server's id
// out: no protobuf, so the Node side needs no .proto) every -interval and prints one line per
// answer: `ok <server id>`, or `err <grpc code> <message>`. It runs until stdin closes or
// -calls answers were printed. A panic inside grpc-go (e.g. "hash of unhashable type
// map[string]interface {}", etcd-io/etcd#19700) ends the process with exit code 2 and the panic
// on stderr, which is what the test looks for in its negative control.
//
// Build (Debian golang-go 1.19, golang-etcd-server-dev 3.4, golang-google-grpc-dev 1.33):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o grpcclient ./test/interop/go/grpcclient
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/naming/resolver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// rawCodec passes []byte through unchanged. It is registered under the name "proto" so the
// content-type stays the standard application/grpc+proto.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func main() {
	etcd := flag.String("etcd", "127.0.0.1:2379", "etcd client endpoint")
	target := flag.String("target", "", "naming target, e.g. services/echo (dialled as etcd:///<target>)")
	interval := flag.Duration("interval", 5*time.Millisecond, "pause between calls")
	calls := flag.Int("calls", 0, "stop after this many answers (0 = until stdin closes)")
	// grpc-go sends the dial target's endpoint ("services/echo") as :authority; Node's HTTP/2
	// (nghttp2) refuses a '/' there with RST_STREAM PROTOCOL_ERROR, so name the authority.
	authority := flag.String("authority", "localhost", ":authority sent with every call")
	flag.Parse()
	if *target == "" {
		fmt.Fprintln(os.Stderr, "grpcclient: -target is required")
		os.Exit(64)
	}

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{*etcd}, DialTimeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcclient: etcd:", err)
		os.Exit(1)
	}
	defer cli.Close()
	builder, err := resolver.NewBuilder(cli)
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcclient: resolver:", err)
		os.Exit(1)
	}
	conn, err := grpc.Dial("etcd:///"+*target,
		grpc.WithResolvers(builder),
		grpc.WithInsecure(),
		grpc.WithAuthority(*authority),
		grpc.WithDefaultServiceConfig(`{"loadBalancingPolicy":"round_robin"}`),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcclient: dial:", err)
		os.Exit(1)
	}
	defer conn.Close()

	stop := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()

	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(out, "ready")
	out.Flush()
	n := 0
	for {
		select {
		case <-stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req := []byte("go")
		var reply []byte
		err := conn.Invoke(ctx, "/roster.interop.Echo/Who", &req, &reply, grpc.ForceCodec(rawCodec{}))
		cancel()
		if err != nil {
			s, _ := status.FromError(err)
			fmt.Fprintf(out, "err %s %s\n", s.Code(), s.Message())
		} else {
			fmt.Fprintf(out, "ok %s\n", reply)
			n++
		}
		out.Flush()
		if *calls > 0 && n >= *calls {
			return
		}
		time.Sleep(*interval)
	}
}
