package nodes

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flowguard/flowguard/internal/policy"
	"github.com/flowguard/flowguard/internal/workflow"
)

// HTTP calls an HTTP API and reads its answer:
//
//	{"id": "ticker", "type": "http", "provider": "binance", "timeout": "2s",
//	 "config": {
//	   "method": "GET",
//	   "url": "https://api.binance.com/api/v3/ticker/bookTicker",
//	   "query": {"symbol": "${inputs.symbol}"},
//	   "headers": {"X-MBX-APIKEY": "${env:BINANCE_KEY}"},
//	   "outputs": {"bid": "float(body.bidPrice)", "ask": "float(body.askPrice)"}}}
//
// url, query values, header values and the strings of body (any JSON value, sent
// as JSON) are templates (see Template). The answer's status, headers (lowercase
// names) and body (parsed when JSON, else text) are the outputs status, headers
// and body, or, with config.outputs, expressions over status, headers, body,
// inputs, nodes and execution pick them. A 2xx status completes the node; 5xx and
// 408 fail it transiently (retried), 429 too (after its Retry-After), other
// statuses permanently. The provider defaults to the URL's host.
//
// POST and PATCH are not idempotent: a timeout, a broken connection or a 5xx does
// not say the provider did nothing, and a second POST can place a second order. So
// they are retried only when the request surely was not processed (the connection
// could not be established, or HTTP 429), unless config.idempotent declares the
// call safe to repeat (it carries an idempotency key or a client order id). GET,
// PUT and DELETE are idempotent.
type HTTP struct {
	// Client makes the calls; nil registers the type to check definitions only.
	Client  *http.Client
	Secrets *Secrets
	// Desk gates the calls of nodes declaring "side_effect": "order" (see orderGate).
	Desk OrderDesk
}

// httpMethods are the methods a node may use.
var httpMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

type httpConfig struct {
	Method     string            `json:"method,omitempty"`
	URL        string            `json:"url"`
	Query      map[string]string `json:"query,omitempty"`
	Idempotent bool              `json:"idempotent,omitempty"`
	SideEffect string            `json:"side_effect,omitempty"`
	Order      json.RawMessage   `json:"order,omitempty"`
	callConfig
}

// httpAnswer is what the output expressions of an http node see.
type httpAnswer struct {
	Inputs    map[string]any            `expr:"inputs"`
	Nodes     map[string]map[string]any `expr:"nodes"`
	Execution Execution                 `expr:"execution"`
	Status    int                       `expr:"status"`
	Headers   map[string]string         `expr:"headers"`
	Body      any                       `expr:"body"`
}

type httpRunner struct {
	client   *http.Client
	provider string
	method   string
	// idempotent: the call may be repeated after a failure that came, or may have
	// come, after the provider received it.
	idempotent bool
	url        *Template
	query      namedTemplates
	call
}

// Compile implements Type.
func (h HTTP) Compile(n workflow.Node) (Runner, error) {
	var cfg httpConfig
	if err := decodeConfig(n.Config, &cfg); err != nil {
		return nil, err
	}
	r := &httpRunner{client: h.Client, method: strings.ToUpper(cfg.Method)}
	if r.method == "" {
		r.method = http.MethodGet
	}
	if !slices.Contains(httpMethods, r.method) {
		return nil, fmt.Errorf("config.method %q is not supported; use one of %s", cfg.Method, strings.Join(httpMethods, ", "))
	}
	r.idempotent = cfg.Idempotent || r.method != http.MethodPost && r.method != http.MethodPatch
	if cfg.URL == "" {
		return nil, fmt.Errorf("config.url is required, for example \"https://api.example.com/v1/ticker\"")
	}
	var err error
	if r.url, err = compileTemplate(cfg.URL); err != nil {
		return nil, fmt.Errorf("config.url: %v", err)
	}
	host, err := templateHost(r.url)
	if err != nil {
		return nil, fmt.Errorf("config.url: %v", err)
	}
	if r.provider, err = providerName(n, host, "the host of config.url"); err != nil {
		return nil, err
	}
	if r.query, err = compileNamed(cfg.Query, "query"); err != nil {
		return nil, err
	}
	if r.call, err = compileCall(cfg.callConfig, h.Secrets, httpAnswer{}); err != nil {
		return nil, err
	}
	return gateOrder(r, n, cfg.SideEffect, cfg.Order, h.Desk)
}

// templateHost returns the host of a URL template, "" when a placeholder comes
// before the end of the host. A URL without placeholders must be a full http(s) URL.
func templateHost(t *Template) (string, error) {
	src := t.source
	if t.literal() {
		_, err := checkURL(src)
		if err != nil {
			return "", err
		}
		u, _ := url.Parse(src)
		return u.Host, nil
	}
	prefix := src[:t.firstPlaceholder()]
	scheme, rest, ok := strings.Cut(prefix, "://")
	if !ok {
		return "", nil
	}
	end := strings.IndexAny(rest, "/?#")
	if end <= 0 {
		return "", nil
	}
	u, err := checkURL(scheme + "://" + rest[:end])
	if err != nil {
		return "", err
	}
	return u.Host, nil
}

// checkURL parses a URL and requires an http or https scheme and a host.
func checkURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("invalid URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("URL %q must start with http:// or https:// and name a host", raw)
	}
	return u, nil
}

// Provider implements Provider.
func (r *httpRunner) Provider() string { return r.provider }

// Run implements Runner; outputs and errors are redacted of secrets.
func (r *httpRunner) Run(ctx context.Context, in Input) (Result, error) {
	out, err := r.run(ctx, in)
	if err != nil {
		return Result{}, r.secrets.redactError(err)
	}
	return Result{Outputs: r.secrets.redactOutputs(out)}, nil
}

func (r *httpRunner) run(ctx context.Context, in Input) (map[string]any, error) {
	if r.client == nil {
		return nil, Permanent(KindNode, errors.New("the http node type was registered without an HTTP client; only a worker runs http nodes"))
	}
	req, target, err := r.request(ctx, in.Env)
	if err != nil {
		return nil, err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		if errors.Is(err, policy.ErrEgressRefused) {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return nil, Permanent(KindEgress, fmt.Errorf("%s %s: %v", r.method, target, err))
		}
		if ctx.Err() != nil {
			return nil, r.sent(&Error{Kind: KindNode, Err: fmt.Errorf("%s %s: stopped: %w", r.method, target, ctx.Err())})
		}
		var op *net.OpError
		notSent := errors.As(err, &op) && op.Op == "dial"
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its message repeats the URL, query included
		}
		e := &Error{Kind: KindConnection, Transient: true, Err: fmt.Errorf("%s %s: %v", r.method, target, err)}
		if notSent {
			return nil, e
		}
		return nil, r.sent(e)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, r.sent(&Error{Kind: KindNode, Err: fmt.Errorf("%s %s: stopped while reading the answer: %w", r.method, target, ctx.Err())})
		}
		return nil, r.sent(&Error{Kind: KindConnection, Transient: true, Err: fmt.Errorf("%s %s: reading the answer: %v", r.method, target, err)})
	}
	if len(data) > maxAnswerBytes {
		return nil, Permanent(KindBadResponse, fmt.Errorf("%s %s: the answer is larger than %d bytes; ask the provider for less", r.method, target, maxAnswerBytes))
	}
	if e := statusError(r.method, target, resp, data); e != nil {
		if e.Kind == KindHTTPStatus && e.Transient { // 5xx, 408: the provider may have acted
			return nil, r.sent(e)
		}
		return nil, e
	}
	body, err := parseBody(data, strings.Contains(resp.Header.Get("Content-Type"), "json"))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.method, target, err)
	}
	answer := httpAnswer{
		Inputs: in.Env.Inputs, Nodes: in.Env.Nodes, Execution: in.Env.Execution,
		Status: resp.StatusCode, Headers: flatHeaders(resp.Header), Body: body,
	}
	if len(r.outputs.names) == 0 {
		return map[string]any{"status": answer.Status, "headers": answer.Headers, "body": answer.Body}, nil
	}
	return r.outputs.pick(answer)
}

// sent marks a failure that may come after the provider acted on the request (a
// timeout, a broken connection, a 5xx) as unrepeatable, unless the call is
// idempotent: it still counts in the breaker, but is not retried.
func (r *httpRunner) sent(e *Error) *Error {
	if !r.idempotent {
		e.Unrepeatable = true
		e.Err = fmt.Errorf("%w; not retried, since %s is not idempotent and the provider may have acted on the request: check with the provider before sending it again, or set \"idempotent\": true in the node's config if the request carries an idempotency key (such as a client order id from execution.id)", e.Err, r.method)
	}
	return e
}

// request builds the HTTP request, and the URL to name in errors (without query).
func (r *httpRunner) request(ctx context.Context, env *Env) (*http.Request, string, error) {
	raw, err := r.url.text(env, r.secrets)
	if err != nil {
		return nil, "", err
	}
	u, err := checkURL(raw)
	if err != nil {
		return nil, "", Permanent(KindInvalidCall, err)
	}
	target := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	if len(r.query.names) > 0 {
		q := u.Query()
		for i, name := range r.query.names {
			v, err := r.query.templates[i].value(env, r.secrets)
			if err != nil {
				return nil, "", err
			}
			values, ok := v.([]any)
			if !ok {
				values = []any{v}
			}
			for _, e := range values {
				s, err := formatText(e)
				if err != nil {
					return nil, "", Permanent(KindExpression, fmt.Errorf("config.query.%s: %v", name, err))
				}
				q.Add(name, s)
			}
		}
		u.RawQuery = q.Encode()
	}
	body, err := r.renderBody(env)
	if err != nil {
		return nil, "", err
	}
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), reader)
	if err != nil {
		return nil, "", Permanent(KindInvalidCall, fmt.Errorf("%s %s: %v", r.method, target, err))
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	for i, name := range r.headers.names {
		v, err := r.headers.templates[i].text(env, r.secrets)
		if err != nil {
			return nil, "", err
		}
		req.Header.Set(name, v)
	}
	if err := r.secrets.checkRecipient(u.Hostname(), u, req.Header, body); err != nil {
		return nil, "", err
	}
	return req, target, nil
}

// statusError classifies a non-2xx answer; nil for 2xx.
func statusError(method, target string, resp *http.Response, body []byte) *Error {
	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return nil
	}
	msg := fmt.Sprintf("%s %s: HTTP %s", method, target, resp.Status)
	if snippet := answerSnippet(body); snippet != "" {
		msg += ": " + snippet
	}
	switch {
	case code == http.StatusTooManyRequests || code == http.StatusTeapot: // 418: an exchange's ban
		wait := banWait(resp.Header, time.Now())
		if wait > 0 {
			msg += fmt.Sprintf(" (the provider asks to retry after %s; every worker pauses its calls to it until then)", wait)
		}
		return &Error{Kind: KindRateLimited, Transient: true, Wait: wait, Err: errors.New(msg)}
	case code >= 500 || code == http.StatusRequestTimeout:
		return &Error{Kind: KindHTTPStatus, Transient: true, Err: errors.New(msg)}
	}
	return &Error{Kind: KindHTTPStatus, Err: errors.New(msg + "; the provider refused the request: check the node's config and inputs")}
}

// banWait reads how long a provider that answered 429 or 418 asks to wait:
// Retry-After, else the reset of its rate limit (RateLimit-Reset, seconds; Bybit's
// X-Bapi-Limit-Reset-Timestamp, Unix milliseconds); 0 when none.
func banWait(h http.Header, now time.Time) time.Duration {
	if wait := retryAfter(h.Get("Retry-After"), now); wait > 0 {
		return wait
	}
	if secs, err := strconv.Atoi(strings.TrimSpace(h.Get("RateLimit-Reset"))); err == nil && secs > 0 {
		return time.Duration(secs) * time.Second
	}
	if ms, err := strconv.ParseInt(strings.TrimSpace(h.Get("X-Bapi-Limit-Reset-Timestamp")), 10, 64); err == nil {
		return max(time.UnixMilli(ms).Sub(now), 0)
	}
	return 0
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		return max(time.Duration(secs)*time.Second, 0)
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

// answerSnippet returns the start of an error answer, on one line.
func answerSnippet(body []byte) string {
	const limit = 256
	s := strings.Join(strings.Fields(string(body[:min(len(body), limit)])), " ")
	if len(body) > limit {
		s += "..."
	}
	return s
}
