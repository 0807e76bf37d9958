package console

import (
	"fmt"
	"html/template"
	"strings"
	"time"
)

// plotCharts are a workflow's charts, as inline SVG.
type plotCharts struct {
	Throughput, Latency template.HTML
	Total, Failed       int
	LastP50, LastP99    time.Duration
}

// Size of a chart's drawing area, in SVG units; the SVG scales to its box.
const (
	plotW, plotH = 600.0, 120.0
	plotPad      = 14.0
)

// drawPlots draws per-minute throughput as bars, and p50 and p99 latency as
// lines, of points (oldest first).
func drawPlots(points []Point) plotCharts {
	c := plotCharts{}
	maxCount, maxLatency := 1, time.Millisecond
	for _, p := range points {
		c.Total += p.Count
		c.Failed += p.Failed
		maxCount = max(maxCount, p.Count)
		maxLatency = max(maxLatency, p.P99)
		if p.Count > 0 {
			c.LastP50, c.LastP99 = p.P50, p.P99
		}
	}
	n := float64(len(points))
	step := plotW / n
	var bars strings.Builder
	for i, p := range points {
		if p.Count == 0 {
			continue
		}
		h := float64(p.Count) / float64(maxCount) * (plotH - plotPad)
		fh := float64(p.Failed) / float64(maxCount) * (plotH - plotPad)
		x := float64(i) * step
		fmt.Fprintf(&bars, `<rect class="bar" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s: %d finished, %d not completed</title></rect>`,
			x+1, plotH-h, step-2, h, p.Minute.Format("15:04"), p.Count, p.Failed)
		if fh > 0 {
			fmt.Fprintf(&bars, `<rect class="bar-failed" x="%.1f" y="%.1f" width="%.1f" height="%.1f"/>`, x+1, plotH-fh, step-2, fh)
		}
	}
	c.Throughput = svg("throughput per minute", fmt.Sprintf("max %d/min", maxCount), bars.String(), points)
	line := func(class string, pick func(Point) time.Duration) string {
		var pts []string
		for i, p := range points {
			if p.Count == 0 {
				continue
			}
			y := plotH - float64(pick(p))/float64(maxLatency)*(plotH-plotPad)
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", float64(i)*step+step/2, y))
		}
		if len(pts) == 0 {
			return ""
		}
		if len(pts) == 1 { // one point: a dot
			return fmt.Sprintf(`<circle class="%s" cx="%s" cy="%s" r="3"/>`, class, strings.Split(pts[0], ",")[0], strings.Split(pts[0], ",")[1])
		}
		return fmt.Sprintf(`<polyline class="%s" points="%s"/>`, class, strings.Join(pts, " "))
	}
	c.Latency = svg("latency p50 and p99", "max "+formatDuration(maxLatency), line("p50", func(p Point) time.Duration { return p.P50 })+line("p99", func(p Point) time.Duration { return p.P99 }), points)
	return c
}

// svg wraps a chart's shapes with its frame, scale label and time axis.
func svg(title, scale, shapes string, points []Point) template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %.0f %.0f" role="img" aria-label="%s"><title>%s</title>`, plotW, plotH+14, title, title)
	fmt.Fprintf(&b, `<line class="axis" x1="0" y1="%.0f" x2="%.0f" y2="%.0f"/>`, plotH, plotW, plotH)
	b.WriteString(shapes)
	fmt.Fprintf(&b, `<text class="label" x="2" y="10">%s</text>`, scale)
	if len(points) > 0 {
		fmt.Fprintf(&b, `<text class="label" x="2" y="%.0f">%s</text>`, plotH+12, points[0].Minute.Format("15:04"))
		fmt.Fprintf(&b, `<text class="label end" x="%.0f" y="%.0f">%s UTC</text>`, plotW-2, plotH+12, points[len(points)-1].Minute.Format("15:04"))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // built here from numbers and constants only
}
