// plainreg is a Go service registering itself the way many Go services do with etcd's Go client:
// a lease with keepalive and one key per instance, `/services/<service>/<host:port>`, whose value
// is the address as plain text (or any -value given, e.g. a flat JSON object).
//
// It prints `registered <key> <lease id hex>` once the key is written, then keeps the lease alive
// until stdin closes (then it revokes the lease, as a clean shutdown does) or it is killed (then
// etcd deletes the key when the lease's TTL runs out, as it does for a crashed process).
//
// Build: GO111MODULE=off GOPATH=/usr/share/gocode go build -o plainreg ./test/interop/go/plainreg
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/clientv3"
)

func main() {
	etcd := flag.String("etcd", "127.0.0.1:2379", "etcd client endpoint")
	root := flag.String("root", "/services", "key root")
	service := flag.String("service", "web", "service name")
	addr := flag.String("addr", "10.0.0.1:8080", "host:port of this instance")
	value := flag.String("value", "", "value to store (default: the address as plain text)")
	ttl := flag.Int64("ttl", 5, "lease TTL in seconds")
	flag.Parse()

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{*etcd}, DialTimeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "plainreg: etcd:", err)
		os.Exit(1)
	}
	defer cli.Close()
	ctx := context.Background()
	lease, err := cli.Grant(ctx, *ttl)
	if err != nil {
		fmt.Fprintln(os.Stderr, "plainreg: grant:", err)
		os.Exit(1)
	}
	key := *root + "/" + *service + "/" + *addr
	v := *value
	if v == "" {
		v = *addr
	}
	if _, err := cli.Put(ctx, key, v, clientv3.WithLease(lease.ID)); err != nil {
		fmt.Fprintln(os.Stderr, "plainreg: put:", err)
		os.Exit(1)
	}
	ka, err := cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		fmt.Fprintln(os.Stderr, "plainreg: keepalive:", err)
		os.Exit(1)
	}
	go func() {
		for range ka {
		}
	}()
	fmt.Printf("registered %s %x\n", key, int64(lease.ID))

	_, _ = io.Copy(io.Discard, os.Stdin)
	rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Revoke(rctx, lease.ID); err != nil {
		fmt.Fprintln(os.Stderr, "plainreg: revoke:", err)
		os.Exit(1)
	}
	fmt.Println("revoked")
}
