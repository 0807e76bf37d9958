package bench

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/client"
	"github.com/flowguard/flowguard/internal/natstest"
)

// TestHTTPWorkload runs the HTTP workload briefly: every execution of the http
// workflow must complete against the simulated exchange.
func TestHTTPWorkload(t *testing.T) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv.URL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(nc, "")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{cfg: Config{URL: srv.URL(), Concurrency: []int{2}, Requests: 20, AckWait: 30 * time.Second,
		Progress: func(string, int, int) {}}, nc: nc, js: js, client: cl}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	points, err := e.httpSweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(points) != 1 {
		t.Fatalf("points %+v", points)
	}
	p := points[0]
	if p.ExecPerSec <= 0 || p.TransformExecPerSec <= 0 || p.DirectPairsPerSec <= 0 || p.Requests != 20 {
		t.Errorf("point %+v: every rate must be measured", p)
	}
}
