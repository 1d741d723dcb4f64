package etcd_test

import (
	"context"
	"github.com/metal-dev/metal/internal/testenv"
	"testing"
	"time"

	"github.com/metal-dev/metal/inventory/etcdtest"
)

// cluster adapts etcdtest's real etcd-server cluster to these tests.
type cluster struct {
	t *testing.T
	*etcdtest.Cluster
}

func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	return &cluster{t: t, Cluster: etcdtest.New(t, n)}
}

func (c *cluster) stop(i int, kill bool) {
	c.t.Helper()
	if err := c.Stop(i, kill); err != nil {
		c.t.Fatal(err)
	}
}

// restart starts member i again on its data and waits until it is healthy.
func (c *cluster) restart(i int) {
	c.t.Helper()
	if err := c.Restart(i); err != nil {
		c.t.Fatal(err)
	}
	if err := c.WaitHealthy(i); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) endpoints(idx ...int) []string { return c.Endpoints(idx...) }

func freePort(t *testing.T) int {
	t.Helper()
	port, err := testenv.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
