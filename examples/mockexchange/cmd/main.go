// Command mockexchange serves a simulated spot exchange on a local port, for
// trying workflows with provider nodes, the demo and flowbench. See docs/demo.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"github.com/flowguard/flowguard/examples/mockexchange"
)

type cli struct {
	Listen      string        `help:"Address to serve on." default:"127.0.0.1:8090"`
	Seed        uint64        `help:"Seed of the price walk and of the injected 5xx: the same seed and requests give the same prices." default:"42"`
	WeightLimit int           `help:"Request weight each account (X-API-KEY) may use per --window; over it, HTTP 429 with Retry-After." default:"1200"`
	Window      time.Duration `help:"Length of the weight window." default:"1m"`
	Latency     time.Duration `help:"Latency added to every answer."`
	ErrorRate   float64       `help:"Share of requests answered HTTP 500 (0 to 1)."`
	SlowRate    float64       `help:"Share of answers delayed by --slow-delay more (0 to 1)."`
	SlowDelay   time.Duration `help:"Delay of slow answers." default:"5s"`
	Outage      time.Duration `help:"Answer every request HTTP 503 for this long from the start."`
	DriftBps    float64       `help:"Trend of the price walk, in basis points per step (negative: falling)."`
}

func main() {
	var c cli
	kong.Parse(&c, kong.Name("mockexchange"),
		kong.Description("A simulated spot exchange: ticker, book top, orders (idempotent by client order id), balances, request weights and injected faults. Change faults at run time with PUT /admin/faults."))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "mockexchange:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c cli) error {
	ex, err := mockexchange.New(mockexchange.Config{
		Seed: c.Seed, WeightLimit: c.WeightLimit, Window: c.Window,
		Faults: mockexchange.Faults{Latency: c.Latency, ErrorRate: c.ErrorRate, SlowRate: c.SlowRate, SlowDelay: c.SlowDelay,
			OutageFor: c.Outage, DriftBps: c.DriftBps},
	})
	if err != nil {
		return err
	}
	l, err := mockexchange.Listen(c.Listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: ex.Handler(), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(os.Stderr, "mockexchange: serving on http://%s (try GET /api/v3/ticker/price?symbol=BTCUSDT)\n", l.Addr())
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
