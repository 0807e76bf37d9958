package console

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flowguard/flowguard/internal/client"
	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/emergency"
)

// pageSize is how many executions a page of the list shows.
const pageSize = 50

// Handler returns the console's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/executions", http.StatusFound)
	})
	mux.Handle("GET /static/", s.views.static)
	mux.HandleFunc("GET /sse", s.sse)
	mux.HandleFunc("GET /executions", s.executions)
	mux.HandleFunc("GET /executions/{workflow}/{id}", s.execution)
	mux.HandleFunc("GET /fleet", s.fleet)
	mux.HandleFunc("GET /providers", s.providers)
	mux.HandleFunc("POST /providers", s.act(s.orderBreaker))
	mux.HandleFunc("GET /risk", s.risk)
	mux.HandleFunc("GET /emergency", s.emergency)
	mux.HandleFunc("POST /emergency", s.act(s.command))
	mux.HandleFunc("GET /dlq", s.deadLetters)
	mux.HandleFunc("GET /dlq/{seq}", s.deadLetter)
	mux.HandleFunc("POST /dlq/{seq}/republish", s.act(s.republish))
	mux.HandleFunc("GET /plots", s.plots)
	mux.HandleFunc("GET /schedules", s.schedules)
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /logout", s.logout)
	return securityHeaders(mux)
}

// securityHeaders keeps the page from being framed and from running anything but
// its own script.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

// newPage returns a page for r.
func (s *Server) newPage(r *http.Request, nav, title string, topics ...string) *page {
	session := s.auth.session(r)
	offline := ""
	if s.nc != nil && !s.nc.IsConnected() {
		offline = "The console has lost its NATS connection (" + strings.ToLower(s.nc.Status().String()) + "): what this page shows may be stale. It reconnects by itself; check the NATS servers and the network."
	}
	p := &page{Offline: offline, Title: title, Nav: nav, Topics: topics, CSRF: s.auth.csrf(session), Actions: s.auth.enabled(),
		Signed: session != "", Path: r.URL.RequestURI()}
	// The outcome of an action comes back in the URL, signed, so that a link made
	// elsewhere cannot put words on the page.
	q := r.URL.Query()
	if ok, failed := q.Get("ok"), q.Get("err"); equal(q.Get("sig"), s.auth.sign("outcome:"+ok+"\x00"+failed)) {
		p.Flash, p.Error = ok, failed
	}
	return p
}

// outcome returns the query that reports an action's outcome to the page.
func (s *Server) outcome(ok, failed string) string {
	q := url.Values{"sig": {s.auth.sign("outcome:" + ok + "\x00" + failed)}}
	if ok != "" {
		q.Set("ok", ok)
	}
	if failed != "" {
		q.Set("err", failed)
	}
	return q.Encode()
}

// act wraps an action: it refuses requests without credentials or with a bad CSRF
// token, and sends the browser back to the view with the outcome.
func (s *Server) act(fn func(r *http.Request) (back, done string, err error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if why := s.auth.allow(r); why != "" {
			s.log.Warn().Str("path", r.URL.Path).Str("remote", r.RemoteAddr).Str("reason", why).Msg("console action refused")
			p := s.newPage(r, "", "Refused")
			p.Error = why
			s.views.render(w, r, http.StatusForbidden, "refused", p)
			return
		}
		ctx, end := s.refuse.start(r.Context())
		back, done, err := fn(r.WithContext(ctx))
		if cause := context.Cause(ctx); errors.Is(cause, errRefused) {
			err = cause
		}
		end()
		failed := ""
		if err != nil {
			s.log.Warn().Err(err).Str("path", r.URL.Path).Msg("console action failed")
			done, failed = "", err.Error()
		} else {
			s.log.Info().Str("path", r.URL.Path).Str("done", done).Msg("console action")
		}
		http.Redirect(w, r, back+"?"+s.outcome(done, failed), http.StatusSeeOther)
	}
}

// sse streams the names of the changed topics the page asked for, as events.
func (s *Server) sse(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming is not supported here", http.StatusInternalServerError)
		return
	}
	topics := strings.Split(r.URL.Query().Get("topics"), ",")
	sub := s.hub.subscribe(topics)
	defer s.hub.unsubscribe(sub)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = fmt.Fprint(w, "retry: 2000\n: live\n\n")
	flusher.Flush()
	keepAlive := time.NewTicker(15 * time.Second)
	defer keepAlive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-keepAlive.C:
			_, _ = fmt.Fprint(w, ": keep-alive\n\n")
		case <-sub.notify:
			for _, t := range s.hub.changes(sub) {
				_, _ = fmt.Fprintf(w, "event: change\ndata: %s\n\n", t)
			}
		}
		flusher.Flush()
	}
}

// executionsData is the list view.
type executionsData struct {
	Query           Query
	Rows            []Execution
	Total           int
	Bots, Workflows []string
	Statuses        []string
	Filters         url.Values
	Prev, Next      string
	Since           string
}

func (s *Server) executions(w http.ResponseWriter, r *http.Request) {
	in := r.URL.Query()
	if id := strings.TrimSpace(in.Get("id")); id != "" {
		if wf, ok := s.idx.find(id); ok {
			http.Redirect(w, r, "/executions/"+wf+"/"+id, http.StatusFound)
			return
		}
	}
	q := Query{BotID: in.Get("bot"), WorkflowID: in.Get("workflow"), Status: in.Get("status"), Limit: pageSize}
	p := s.newPage(r, "executions", "Executions", topicExecutions)
	if id := strings.TrimSpace(in.Get("id")); id != "" {
		p.Error = "no execution with this id in the window; open /executions/<workflow_id>/<execution_id> to read an older one from the event stream"
		if contract.CheckID("execution", id) != nil {
			p.Error = "an execution id is 1 to 64 of A-Z a-z 0-9 _ -"
		}
	}
	if since := in.Get("since"); since != "" {
		d, err := time.ParseDuration(since)
		if err != nil || d <= 0 {
			p.Error = "started within must be a duration such as 15m or 2h"
		} else {
			q.Since = time.Now().Add(-d)
		}
	}
	q.Offset, _ = strconv.Atoi(in.Get("offset"))
	q.Offset = max(0, q.Offset)
	rows, total := s.idx.list(q)
	bots, workflows := s.idx.facets()
	d := &executionsData{Query: q, Rows: rows, Total: total, Bots: bots, Workflows: workflows, Since: in.Get("since"),
		Statuses: []string{contract.StatusRunning, contract.StatusCompleted, contract.StatusFailed, contract.StatusHalted, statusRejected}}
	d.Filters = url.Values{}
	for _, k := range []string{"bot", "workflow", "status", "since"} {
		if v := in.Get(k); v != "" {
			d.Filters.Set(k, v)
		}
	}
	page := func(offset int) string {
		v := maps.Clone(d.Filters)
		v.Set("offset", strconv.Itoa(offset))
		return "/executions?" + v.Encode()
	}
	if q.Offset > 0 {
		d.Prev = page(max(0, q.Offset-pageSize))
	}
	if q.Offset+pageSize < total {
		d.Next = page(q.Offset + pageSize)
	}
	p.Data = d
	s.views.render(w, r, http.StatusOK, "executions", p)
}

// executionData is an execution's page.
type executionData struct {
	WorkflowID, ID string
	Timeline       *Timeline
	Status         *contract.Status
	Result         *contract.Result
	ReadError      string
}

func (s *Server) execution(w http.ResponseWriter, r *http.Request) {
	wf, id := r.PathValue("workflow"), r.PathValue("id")
	if contract.CheckID("workflow", wf) != nil || contract.CheckID("execution", id) != nil {
		http.Error(w, "no such execution: workflow and execution ids are 1 to 64 of A-Z a-z 0-9 _ -", http.StatusNotFound)
		return
	}
	p := s.newPage(r, "executions", "Execution "+id, topicExecution+id)
	d := &executionData{WorkflowID: wf, ID: id}
	events, err := s.readExecution(r.Context(), wf, id)
	if err != nil {
		d.ReadError = err.Error()
	}
	d.Timeline = buildTimeline(events, time.Now())
	if st, err := s.client.Status(r.Context(), wf, id); err == nil {
		d.Status = st
	}
	if res, err := s.client.Result(r.Context(), wf, id); err == nil {
		d.Result = res
	}
	p.Data = d
	code := http.StatusOK
	if len(events) == 0 && d.Status == nil {
		code = http.StatusNotFound
		p.Error = "no events and no status for this execution: it never ran, or its events and state have expired"
	}
	s.views.render(w, r, code, "execution", p)
}

// fleetData is the fleet view.
type fleetData struct {
	Workers  []*WorkerStatus
	Interval time.Duration
	Now      time.Time
}

func (s *Server) fleet(w http.ResponseWriter, r *http.Request) {
	p := s.newPage(r, "fleet", "Fleet", topicFleet)
	p.Data = &fleetData{Workers: s.feeds.workers(), Interval: s.cfg.FleetInterval, Now: time.Now()}
	s.views.render(w, r, http.StatusOK, "fleet", p)
}

// Stale reports whether the worker missed the last discoveries.
func (d *fleetData) Stale(w *WorkerStatus) bool { return d.Now.Sub(w.Seen) > 3*d.Interval }

// workers returns the fleet sorted by id.
func (f *feeds) workers() []*WorkerStatus {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*WorkerStatus, 0, len(f.fleet))
	for _, w := range f.fleet {
		c := *w
		out = append(out, &c)
	}
	slices.SortFunc(out, func(a, b *WorkerStatus) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// providerRow is one provider on the providers view.
type providerRow struct {
	BreakerView
	// State is the cluster-wide state: the operator's open order wins, then the
	// shared state, then the worst state a worker reported.
	State   string
	Workers []contract.BreakerState
}

func (s *Server) providers(w http.ResponseWriter, r *http.Request) {
	p := s.newPage(r, "providers", "Providers", topicProviders)
	s.feeds.mu.RLock()
	rows := make([]providerRow, 0, len(s.feeds.breakers))
	for _, v := range s.feeds.breakers {
		row := providerRow{BreakerView: *v, State: contract.BreakerClosed}
		for _, st := range v.Workers {
			row.Workers = append(row.Workers, st)
			row.State = worse(row.State, st.State)
		}
		if v.Shared != nil {
			row.State = v.Shared.State
		}
		if v.Override != nil && v.Override.Action == contract.BreakerActionOpen && (v.Override.Until == nil || v.Override.Until.After(time.Now())) {
			row.State = contract.BreakerOpen
		}
		slices.SortFunc(row.Workers, func(a, b contract.BreakerState) int { return cmp.Compare(a.WorkerID, b.WorkerID) })
		rows = append(rows, row)
	}
	s.feeds.mu.RUnlock()
	slices.SortFunc(rows, func(a, b providerRow) int { return cmp.Compare(a.Provider, b.Provider) })
	p.Data = rows
	s.views.render(w, r, http.StatusOK, "providers", p)
}

func worse(a, b string) string {
	rank := map[string]int{contract.BreakerClosed: 0, contract.BreakerHalfOpen: 1, contract.BreakerOpen: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

func (s *Server) orderBreaker(r *http.Request) (string, string, error) {
	o := &contract.BreakerOverride{Provider: strings.TrimSpace(r.PostFormValue("provider")), Action: r.PostFormValue("action"),
		Reason: strings.TrimSpace(r.PostFormValue("reason")), IssuedBy: issuedBy(r), IssuedAt: time.Now().UTC()}
	if o.Reason == "" {
		return "/providers", "", errors.New("give a reason: it is kept with the order and shown to every operator")
	}
	if o.Action != contract.BreakerActionOpen && o.Action != contract.BreakerActionClose {
		return "/providers", "", fmt.Errorf("action %q: use open or close", o.Action)
	}
	if until := r.PostFormValue("for"); until != "" && o.Action == contract.BreakerActionOpen {
		d, err := time.ParseDuration(until)
		if err != nil || d <= 0 {
			return "/providers", "", fmt.Errorf("for %q is not a duration such as 15m", until)
		}
		t := o.IssuedAt.Add(d)
		o.Until = &t
	}
	if err := s.client.OrderBreaker(r.Context(), o); err != nil {
		return "/providers", "", err
	}
	return "/providers", fmt.Sprintf("breaker of %s ordered %s on every worker", o.Provider, o.Action), nil
}

// issuedBy names who acted, for the audit trail: the name the operator gave, and
// that it came through the console.
func issuedBy(r *http.Request) string {
	if who := strings.TrimSpace(r.PostFormValue("issued_by")); who != "" {
		return who + " (console)"
	}
	return "console"
}

// riskRow is one limit of a bot beside its metric.
type riskRow struct {
	Scope  string
	Limit  contract.RiskLimit
	Value  float64
	Detail string
	Gauge  gauge
	// Custom limits are evaluated by the workers only.
	Custom bool
	// AutoHalted is the halt the limit published, when it stands.
	AutoHalted *emergency.ScopeState
}

// riskBot is one bot's metrics and limits.
type riskBot struct {
	Metrics *contract.RiskMetrics
	Rows    []riskRow
}

// riskData is the risk view.
type riskData struct {
	Bots []riskBot
	// Unused are the scopes with limits and no bot reporting metrics.
	Limits map[string][]contract.RiskLimit
}

func (s *Server) risk(w http.ResponseWriter, r *http.Request) {
	p := s.newPage(r, "risk", "Risk", topicRisk)
	s.feeds.mu.RLock()
	d := &riskData{Limits: maps.Clone(s.feeds.limits)}
	for _, m := range s.feeds.metrics {
		b := riskBot{Metrics: m}
		for _, scope := range []string{emergency.ScopeGlobal, "bot." + m.BotID, "strategy." + m.StrategyID} {
			for _, l := range s.feeds.limits[scope] {
				b.Rows = append(b.Rows, s.feeds.riskRow(scope, l, m))
			}
		}
		d.Bots = append(d.Bots, b)
	}
	s.feeds.mu.RUnlock()
	slices.SortFunc(d.Bots, func(a, b riskBot) int { return cmp.Compare(a.Metrics.BotID, b.Metrics.BotID) })
	p.Data = d
	s.views.render(w, r, http.StatusOK, "risk", p)
}

// riskRow measures l on m as the workers do; f.mu is held.
func (f *feeds) riskRow(scope string, l contract.RiskLimit, m *contract.RiskMetrics) riskRow {
	row := riskRow{Scope: scope, Limit: l}
	switch l.Type {
	case contract.LimitDailyLoss:
		row.Value = -m.DailyPnL
		row.Detail = "trading day " + m.TradingDay
	case contract.LimitDrawdown:
		if m.PeakEquity > 0 && m.Equity < m.PeakEquity {
			row.Value = (m.PeakEquity - m.Equity) / m.PeakEquity * 100
		}
	case contract.LimitPositionSize:
		for sym, pos := range m.Positions {
			if l.Symbol != "" && sym != l.Symbol {
				continue
			}
			v := pos.Quantity
			if l.Basis == "notional" {
				v = pos.Notional
			}
			if v < 0 {
				v = -v
			}
			if v >= row.Value {
				row.Value, row.Detail = v, sym
			}
		}
	default:
		row.Custom = true
	}
	row.Gauge = newGauge(row.Value, l.Threshold)
	// An auto-halt's reason starts with the limit and its scope (emergency.Breach).
	if st, ok := f.board[scope]; ok && st.State == emergency.Halted && strings.HasPrefix(st.Reason, "risk limit "+l.ID+" ") {
		c := *st
		row.AutoHalted = &c
	}
	return row
}

// scopeRow is one scope on the emergency view.
type scopeRow struct {
	emergency.ScopeState
	// Applied lists the workers whose state includes the scope's last command;
	// Pending those whose does not yet.
	Applied, Pending []string
	AutoHalt         bool
	// AllAppliedAt is when the last worker applied the last command (the
	// applied_at it reports), zero until every worker has.
	AllAppliedAt time.Time
}

// emergencyData is the emergency view.
type emergencyData struct {
	Scopes  []scopeRow
	History []client.Command
	Workers int
}

func (s *Server) emergency(w http.ResponseWriter, r *http.Request) {
	p := s.newPage(r, "emergency", "Emergency", topicEmergency)
	s.feeds.mu.RLock()
	d := &emergencyData{Workers: len(s.feeds.fleet)}
	scopes := slices.Sorted(maps.Keys(s.feeds.board))
	if _, ok := s.feeds.board[emergency.ScopeGlobal]; !ok {
		scopes = append([]string{emergency.ScopeGlobal}, scopes...)
	}
	for _, scope := range scopes {
		row := scopeRow{ScopeState: s.feeds.board.Get(scope)}
		row.AutoHalt = strings.HasPrefix(row.Reason, "risk limit ")
		if row.Seq > 0 {
			for _, wk := range s.feeds.fleet {
				if st, ok := wk.Emergency[scope]; ok && st.Seq >= row.Seq {
					row.Applied = append(row.Applied, wk.ID)
				} else {
					row.Pending = append(row.Pending, wk.ID)
				}
			}
			slices.Sort(row.Applied)
			slices.Sort(row.Pending)
			if mark := s.feeds.applied[scope]; mark.Seq == row.Seq {
				row.AllAppliedAt = mark.At
			}
		}
		d.Scopes = append(d.Scopes, row)
	}
	d.History = slices.Clone(s.feeds.history)
	s.feeds.mu.RUnlock()
	slices.Reverse(d.History) // newest first
	p.Data = d
	s.views.render(w, r, http.StatusOK, "emergency", p)
}

func (s *Server) command(r *http.Request) (string, string, error) {
	scope, action := strings.TrimSpace(r.PostFormValue("scope")), r.PostFormValue("action")
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	switch {
	case action != emergency.ActionHalt && action != emergency.ActionPause && action != emergency.ActionResume:
		return "/emergency", "", fmt.Errorf("action %q: use halt, pause or resume", action)
	case reason == "":
		return "/emergency", "", errors.New("give a reason: it is kept in the audit trail and shown on every halted execution")
	case r.PostFormValue("confirm") != scope:
		return "/emergency", "", fmt.Errorf("not confirmed: type the scope (%s) in the confirmation box to %s it", scope, action)
	}
	seq, err := s.client.Emergency(r.Context(), scope, contract.EmergencyCommand{Action: action, Reason: reason, IssuedBy: issuedBy(r)})
	if err != nil {
		return "/emergency", "", err
	}
	return "/emergency", fmt.Sprintf("%s %s stored (FLOW_EMERGENCY seq %d)", action, scope, seq), nil
}

func (s *Server) deadLetters(w http.ResponseWriter, r *http.Request) {
	p := s.newPage(r, "dlq", "Dead letters", topicDLQ)
	s.feeds.mu.RLock()
	rows := slices.Clone(s.feeds.dlq)
	s.feeds.mu.RUnlock()
	slices.Reverse(rows)
	p.Data = rows
	s.views.render(w, r, http.StatusOK, "dlq", p)
}

// lookupDLQ returns the dead letter of a sequence the console keeps.
func (s *Server) lookupDLQ(seqText string) (DeadLetter, bool) {
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if err != nil {
		return DeadLetter{}, false
	}
	s.feeds.mu.RLock()
	defer s.feeds.mu.RUnlock()
	i, found := slices.BinarySearchFunc(s.feeds.dlq, seq, func(d DeadLetter, seq uint64) int { return cmp.Compare(d.Seq, seq) })
	if !found {
		return DeadLetter{}, false
	}
	return s.feeds.dlq[i], true
}

func (s *Server) deadLetter(w http.ResponseWriter, r *http.Request) {
	dl, ok := s.lookupDLQ(r.PathValue("seq"))
	if !ok {
		http.Error(w, "no such dead letter among the last ones kept: go back to /dlq", http.StatusNotFound)
		return
	}
	p := s.newPage(r, "dlq", fmt.Sprintf("Dead letter %d", dl.Seq))
	p.Data = dl
	s.views.render(w, r, http.StatusOK, "deadletter", p)
}

// republish publishes a dead letter's request again, as a new request id: the old
// one is its execution's id, whose state says it ended.
func (s *Server) republish(r *http.Request) (string, string, error) {
	dl, ok := s.lookupDLQ(r.PathValue("seq"))
	back := "/dlq/" + r.PathValue("seq")
	if !ok {
		return "/dlq", "", errors.New("no such dead letter among the last ones kept")
	}
	if len(dl.Request) == 0 {
		return back, "", errors.New("this dead letter holds no JSON request (only its text), so it cannot be re-published; publish a corrected request yourself")
	}
	var req contract.Request
	if err := json.Unmarshal(dl.Request, &req); err != nil {
		return back, "", fmt.Errorf("the dead letter's request cannot be read (%v); publish a corrected request yourself", err)
	}
	req.RequestID = ""
	id, err := s.client.Submit(r.Context(), &req)
	if err != nil {
		return back, "", err
	}
	return "/executions/" + req.WorkflowID + "/" + id, fmt.Sprintf("re-published as request %s", id), nil
}

// plotsData is the plots view.
type plotsData struct {
	Workflows []string
	Charts    map[string]plotCharts
}

func (s *Server) plots(w http.ResponseWriter, r *http.Request) {
	p := s.newPage(r, "plots", "Plots", topicExecutions)
	points := s.idx.plots(time.Now())
	d := &plotsData{Workflows: slices.Sorted(maps.Keys(points)), Charts: map[string]plotCharts{}}
	for wf, ps := range points {
		d.Charts[wf] = drawPlots(ps)
	}
	p.Data = d
	s.views.render(w, r, http.StatusOK, "plots", p)
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	p := s.newPage(r, "login", "Sign in")
	p.Data = map[string]any{"Token": s.auth.token != "", "Basic": s.auth.user != "", "Next": localPath(r.URL.Query().Get("next"))}
	s.views.render(w, r, http.StatusOK, "login", p)
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if !s.auth.enabled() {
		http.Redirect(w, r, "/login?"+s.outcome("", refusedDisabled), http.StatusSeeOther)
		return
	}
	if !sameOrigin(r) || !s.auth.credentials(r.PostFormValue("token"), r.PostFormValue("user"), r.PostFormValue("password")) {
		s.log.Warn().Str("remote", r.RemoteAddr).Msg("console sign-in refused")
		http.Redirect(w, r, "/login?"+s.outcome("", "wrong token, or user and password: give those the console was started with"), http.StatusSeeOther)
		return
	}
	http.SetCookie(w, s.auth.newSession(r.TLS != nil))
	http.Redirect(w, r, localPath(r.PostFormValue("next")), http.StatusSeeOther)
}

// localPath returns next when it is a path of the console, else the executions
// list: a sign-in never sends the browser to another site.
func localPath(next string) string {
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(next, "/") ||
		strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n\t") {
		return "/executions"
	}
	return next
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
