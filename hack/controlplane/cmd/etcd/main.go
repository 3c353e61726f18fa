// Thin copy of the upstream etcd main package (Apache-2.0, The etcd Authors), so this
// module can pin and build it from the Go module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
