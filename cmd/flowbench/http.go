package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/flowguard/flowguard/internal/bench"
)

// printHTTP prints the HTTP workload beside the transform-only one.
func printHTTP(w io.Writer, points []bench.HTTPPoint) {
	if len(points) == 0 {
		return
	}
	fmt.Fprintln(w, "\nhttp workload (ticker, then order, at the simulated exchange) beside 2 transform nodes:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "concurrency\thttp exec/s\tp50 ms\tp99 ms\ttransform exec/s\tp50 ms\thttp/transform\tdirect HTTP pairs/s\t")
	for _, p := range points {
		fmt.Fprintf(tw, "%d\t%.0f\t%.2f\t%.2f\t%.0f\t%.2f\t%.2f\t%.0f\t\n", p.Concurrency, p.ExecPerSec, p.P50MS, p.P99MS,
			p.TransformExecPerSec, p.TransformP50MS, p.Ratio, p.DirectPairsPerSec)
	}
	tw.Flush()
}
