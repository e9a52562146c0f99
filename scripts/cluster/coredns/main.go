// CoreDNS with only the plugins a one-node test cluster's DNS needs (scripts/cluster.sh builds
// it from the Go module proxy; the stock build links every plugin, cloud SDKs included).
// Plugins register themselves when imported; the server runs them in CoreDNS's own order
// (core/dnsserver's directive list), so this file only chooses which exist.
// There is no forward plugin on purpose: cluster DNS answers cluster names only.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func main() {
	coremain.Run()
}
