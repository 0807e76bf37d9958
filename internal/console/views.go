package console

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"
)

//go:embed web
var webFS embed.FS

// pages are the views, each a template in web/ named after it.
var pages = []string{"executions", "execution", "fleet", "providers", "risk", "emergency", "dlq", "deadletter", "plots", "schedules", "login", "refused"}

// views renders the pages.
type views struct {
	pages  map[string]*template.Template
	static http.Handler
}

func newViews() (*views, error) {
	v := &views{pages: map[string]*template.Template{}}
	for _, name := range pages {
		t, err := template.New(name).Funcs(funcs).ParseFS(webFS, "web/layout.html", "web/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", name, err)
		}
		v.pages[name] = t
	}
	static, err := fs.Sub(webFS, "web/static")
	if err != nil {
		return nil, err
	}
	v.static = http.StripPrefix("/static/", http.FileServerFS(static))
	return v, nil
}

// page is what every view gets.
type page struct {
	Title   string
	Nav     string
	Topics  []string
	CSRF    string
	Actions bool // actions are enabled
	Signed  bool // this browser is signed in
	Flash   string
	Error   string
	// Offline says the console has lost NATS, so that the page may be stale.
	Offline string
	Path    string
	Data    any
}

// render writes a view; with the X-Partial header only its live part, which the
// page's script swaps in when one of its topics changes.
func (v *views) render(w http.ResponseWriter, r *http.Request, code int, name string, p *page) {
	var buf bytes.Buffer
	block := "layout"
	if r.Header.Get("X-Partial") != "" {
		block = "live"
	}
	if err := v.pages[name].ExecuteTemplate(&buf, block, p); err != nil {
		http.Error(w, "render "+name+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if p.Offline != "" {
		w.Header().Set("X-Flowguard-Offline", p.Offline) // the script shows it above a swapped live part
	}
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

var funcs = template.FuncMap{
	"dur":   formatDuration,
	"ms":    func(ms *int64) string { return formatDuration(time.Duration(derefInt(ms)) * time.Millisecond) },
	"ts":    formatTime,
	"clock": func(t time.Time) string { return t.UTC().Format("15:04:05.000") },
	"ago":   ago,
	"pct":   func(f float64) string { return fmt.Sprintf("%.0f%%", f*100) },
	"num":   func(f float64) string { return fmt.Sprintf("%.6g", f) },
	"json":  prettyJSON,
	"join":  strings.Join,
	"query": func(v url.Values) template.URL { return template.URL(v.Encode()) },
	"lower": strings.ToLower,
	"pos":   func(f float64) string { return fmt.Sprintf("%.3f%%", f) },
	"add":   func(a, b int) int { return a + b },
	"mulf":  func(a, b float64) float64 { return a * b },
}

func ago(t time.Time) string {
	d := time.Since(t).Round(time.Second)
	if d < time.Second {
		return "just now"
	}
	return d.String() + " ago"
}

func derefInt(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

func formatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	return d.Round(time.Second).String()
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05.000Z")
}

func prettyJSON(v any) string {
	if raw, ok := v.(json.RawMessage); ok {
		var out bytes.Buffer
		if json.Indent(&out, raw, "", "  ") == nil {
			return out.String()
		}
		return string(raw)
	}
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(data)
}

// gauge is a limit's value beside its threshold.
type gauge struct {
	Fill     float64 // value / threshold, clipped to 0..1
	Headroom float64 // threshold - value
	Level    string  // ok, warn, breach
}

func newGauge(value, threshold float64) gauge {
	g := gauge{Headroom: threshold - value, Level: "ok"}
	if threshold > 0 {
		g.Fill = math.Max(0, math.Min(1, value/threshold))
	}
	switch {
	case value > threshold:
		g.Level = "breach"
	case g.Fill >= 0.8:
		g.Level = "warn"
	}
	return g
}
