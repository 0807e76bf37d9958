package nodes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flowguard/flowguard/internal/workflow"
)

const secretValue = "s3cr3t/key+with=chars"

func testSecrets(t *testing.T) *Secrets {
	t.Helper()
	s, err := NewSecrets([]string{"API_KEY@127.0.0.1"}, func(name string) (string, bool) {
		if name == "API_KEY" {
			return secretValue, true
		}
		return "", false
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// providerRegistry is the worker's registry, with an HTTP client and no NATS.
func providerRegistry(t *testing.T, client *http.Client) *Registry {
	r := NewRegistry()
	r.Register(TypeHTTP, HTTP{Client: client, Secrets: testSecrets(t)})
	r.Register(TypeNATSRequest, NATSRequest{Secrets: testSecrets(t)})
	return r
}

func compileNode(t *testing.T, reg *Registry, n workflow.Node) (Runner, error) {
	t.Helper()
	n.ID = "n1"
	runners, err := reg.Compile(&workflow.Definition{ID: "w", Nodes: []workflow.Node{n}})
	if err != nil {
		return nil, err
	}
	return runners["n1"], nil
}

func mustCompile(t *testing.T, reg *Registry, typ, config string) Runner {
	t.Helper()
	r, err := compileNode(t, reg, workflow.Node{Type: typ, Config: []byte(config)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func testEnv() *Env {
	return &Env{
		Inputs:    map[string]any{"symbol": "BTCUSDT", "qty": 0.5},
		Nodes:     map[string]map[string]any{"quote": {"mid": 64990.5}},
		Execution: Execution{ID: "x1", WorkflowID: "w", CorrelationID: "c-1"},
	}
}

func run(t *testing.T, r Runner) (Result, error) {
	t.Helper()
	return r.Run(context.Background(), Input{Env: testEnv(), Attempt: 1})
}

// seen is what a test server received.
type seen struct {
	method, path string
	query        map[string][]string
	header       http.Header
	body         any
}

func TestHTTPBuildsTheRequestFromTemplates(t *testing.T) {
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := seen{method: r.Method, path: r.URL.Path, query: r.URL.Query(), header: r.Header}
		data, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(data, &s.body)
		got <- s
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"order_id": 42}`)
	}))
	defer srv.Close()

	r := mustCompile(t, providerRegistry(t, srv.Client()), TypeHTTP, `{
		"method": "post",
		"url": "`+srv.URL+`/orders/${inputs.symbol}",
		"query": {"qty": "${inputs.qty}", "tags": "${['a', 'b']}"},
		"headers": {"X-Key": "${env:API_KEY}", "X-Trace": "trace-${execution.correlation_id}"},
		"body": {"symbol": "${inputs.symbol}", "qty": "${inputs.qty}", "note": "mid ${nodes.quote.mid}", "legs": [{"side": "BUY", "literal": "$${not a placeholder}"}]}
	}`)
	res, err := run(t, r)
	if err != nil {
		t.Fatal(err)
	}
	s := <-got
	if s.method != "POST" || s.path != "/orders/BTCUSDT" {
		t.Errorf("request %s %s", s.method, s.path)
	}
	if !reflect.DeepEqual(s.query, map[string][]string{"qty": {"0.5"}, "tags": {"a", "b"}}) {
		t.Errorf("query %v", s.query)
	}
	if s.header.Get("X-Key") != secretValue || s.header.Get("X-Trace") != "trace-c-1" || s.header.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", s.header)
	}
	wantBody := map[string]any{"symbol": "BTCUSDT", "qty": 0.5, "note": "mid 64990.5", "legs": []any{map[string]any{"side": "BUY", "literal": "${not a placeholder}"}}}
	if !reflect.DeepEqual(s.body, wantBody) {
		t.Errorf("body %v\nwant %v", s.body, wantBody)
	}
	if res.Outputs["status"] != 200 || !reflect.DeepEqual(res.Outputs["body"], map[string]any{"order_id": 42.0}) {
		t.Errorf("outputs %v", res.Outputs)
	}
	if h, _ := res.Outputs["headers"].(map[string]string); h["content-type"] != "application/json" {
		t.Errorf("headers output %v", res.Outputs["headers"])
	}
	if p, ok := r.(Provider); !ok || p.Provider() != providerFromURL(srv.URL) {
		t.Errorf("provider %v", r)
	}
}

func providerFromURL(u string) string {
	return strings.NewReplacer(".", "_", ":", "_").Replace(strings.TrimPrefix(u, "http://"))
}

func TestHTTPOutputsPickFields(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Rate-Remaining", "1199")
		_, _ = io.WriteString(w, `{"bidPrice": "64990.50", "askPrice": "64991.00", "levels": [1, 2, 3]}`)
	}))
	defer srv.Close()
	r := mustCompile(t, providerRegistry(t, srv.Client()), TypeHTTP, `{"url": "`+srv.URL+`/ticker", "outputs": {
		"bid": "float(body.bidPrice)", "depth": "len(body.levels)", "code": "status",
		"remaining": "int(headers['x-rate-remaining'])", "symbol": "inputs.symbol"}}`)
	res, err := run(t, r)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"bid": 64990.5, "depth": 3, "code": 200, "remaining": 1199, "symbol": "BTCUSDT"}
	if !reflect.DeepEqual(res.Outputs, want) {
		t.Errorf("outputs %v, want %v", res.Outputs, want)
	}
}

func TestHTTPClassifiesFailures(t *testing.T) {
	later := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	cases := []struct {
		name      string
		status    int
		header    map[string]string
		body      string
		kind      string
		transient bool
		wait      time.Duration // at least
		message   string
	}{
		{"503", 503, nil, "maintenance", KindHTTPStatus, true, 0, "HTTP 503 Service Unavailable: maintenance"},
		{"500", 500, nil, "", KindHTTPStatus, true, 0, "HTTP 500"},
		{"408", 408, nil, "", KindHTTPStatus, true, 0, "HTTP 408"},
		{"400", 400, nil, `{"code":-1121,"msg":"Invalid symbol."}`, KindHTTPStatus, false, 0, "Invalid symbol"},
		{"404", 404, nil, "", KindHTTPStatus, false, 0, "refused the request"},
		{"429 seconds", 429, map[string]string{"Retry-After": "3"}, "", KindRateLimited, true, 3 * time.Second, "retry after 3s"},
		{"429 date", 429, map[string]string{"Retry-After": later}, "", KindRateLimited, true, 80 * time.Second, "HTTP 429"},
		{"429 without header", 429, nil, "", KindRateLimited, true, 0, "HTTP 429"},
		{"418 ban", 418, map[string]string{"Retry-After": "120"}, "", KindRateLimited, true, 120 * time.Second, "retry after 2m0s"},
		{"429 RateLimit-Reset", 429, map[string]string{"RateLimit-Reset": "7"}, "", KindRateLimited, true, 7 * time.Second, "HTTP 429"},
		{"429 Bybit reset", 429, map[string]string{"X-Bapi-Limit-Reset-Timestamp": strconv.FormatInt(time.Now().Add(time.Minute).UnixMilli(), 10)}, "", KindRateLimited, true, 50 * time.Second, "HTTP 429"},
		{"not JSON", 200, map[string]string{"Content-Type": "application/json"}, "<html>", KindBadResponse, false, 0, "not"},
		{"too large", 200, nil, strings.Repeat("x", maxAnswerBytes+1), KindBadResponse, false, 0, "larger than"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			_, err := run(t, mustCompile(t, providerRegistry(t, srv.Client()), TypeHTTP, `{"url": "`+srv.URL+`/x"}`))
			if KindOf(err) != tc.kind || IsTransient(err) != tc.transient || RetryAfterOf(err) < tc.wait || !strings.Contains(err.Error(), tc.message) {
				t.Errorf("err %v: kind %s transient %v wait %s; want %s %v %s containing %q",
					err, KindOf(err), IsTransient(err), RetryAfterOf(err), tc.kind, tc.transient, tc.wait, tc.message)
			}
		})
	}
	t.Run("plain text answer", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "pong") }))
		defer srv.Close()
		res, err := run(t, mustCompile(t, providerRegistry(t, srv.Client()), TypeHTTP, `{"url": "`+srv.URL+`/ping"}`))
		if err != nil || res.Outputs["body"] != "pong" {
			t.Errorf("outputs %v, err %v", res.Outputs, err)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		_, err := run(t, mustCompile(t, providerRegistry(t, http.DefaultClient), TypeHTTP, `{"url": "`+url+`/x"}`))
		if KindOf(err) != KindConnection || !IsTransient(err) {
			t.Errorf("err %v, kind %s; want a transient connection error", err, KindOf(err))
		}
	})
}

func TestHTTPSecretsAreRedacted(t *testing.T) {
	// The server echoes what it got, in the answer and in its errors.
	fail := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		echo, _ := json.Marshal(map[string]any{"path": r.URL.Path, "query": r.URL.RawQuery, "key": r.Header.Get("X-Key"), "auth": r.Header.Get("Authorization")})
		w.Header().Set("X-Echo-Key", r.Header.Get("X-Key"))
		if fail {
			w.WriteHeader(http.StatusBadGateway)
		}
		_, _ = w.Write(echo)
	}))
	defer srv.Close()
	r := mustCompile(t, providerRegistry(t, srv.Client()), TypeHTTP, `{
		"url": "`+srv.URL+`/keys/${env:API_KEY}",
		"query": {"signature": "${env:API_KEY}"},
		"headers": {"X-Key": "${env:API_KEY}", "Authorization": "Bearer ${env:API_KEY}"}
	}`)
	res, err := run(t, r)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(res.Outputs)
	if leaks(string(out)) || !strings.Contains(string(out), Redacted) {
		t.Errorf("outputs leak the secret: %s", out)
	}
	fail = true
	_, err = run(t, r)
	if err == nil || leaks(err.Error()) || !strings.Contains(err.Error(), Redacted) || !IsTransient(err) {
		t.Errorf("error leaks the secret or lost its class: %v", err)
	}
	// A connection error names the URL, whose path holds the secret.
	srv.Close()
	_, err = run(t, r)
	if err == nil || leaks(err.Error()) || KindOf(err) != KindConnection {
		t.Errorf("connection error: %v", err)
	}
}

// leaks reports whether text holds the secret in any form a request carries it.
func leaks(text string) bool {
	for _, form := range []string{secretValue, "s3cr3t%2Fkey%2Bwith%3Dchars", "s3cr3t%2Fkey+with=chars", "s3cr3t"} {
		if strings.Contains(text, form) {
			return true
		}
	}
	return false
}

func TestSecretsMustBeShared(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	_, err := run(t, mustCompile(t, providerRegistry(t, srv.Client()), TypeHTTP, `{"url": "`+srv.URL+`", "headers": {"X": "${env:HOME}"}}`))
	if KindOf(err) != KindSecret || IsTransient(err) || !strings.Contains(err.Error(), "--secret-env HOME") {
		t.Errorf("err %v, want a permanent secret error naming the flag", err)
	}
	for _, tc := range []struct {
		names []string
		env   map[string]string
		want  string
	}{
		{[]string{"MISSING"}, nil, "not set"},
		{[]string{"EMPTY"}, map[string]string{"EMPTY": ""}, "not set or empty"},
		{[]string{"bad-name"}, nil, "not an environment variable name"},
	} {
		_, err := NewSecrets(tc.names, func(n string) (string, bool) { v, ok := tc.env[n]; return v, ok })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewSecrets(%v): %v, want %q", tc.names, err, tc.want)
		}
	}
}

func TestHTTPWithoutClientOnlyChecks(t *testing.T) {
	reg := NewRegistry()
	reg.Register(TypeHTTP, HTTP{})
	r := mustCompile(t, reg, TypeHTTP, `{"url": "https://api.example.com/v1/ticker"}`)
	if _, err := run(t, r); err == nil || IsTransient(err) {
		t.Errorf("err %v, want a permanent error", err)
	}
}

func TestCompileProviderNodes(t *testing.T) {
	cases := []struct {
		name string
		node workflow.Node
		want string // empty: valid
	}{
		{"http minimal", workflow.Node{Type: TypeHTTP, Config: []byte(`{"url": "https://api.binance.com/api/v3/time"}`)}, ""},
		{"http no url", workflow.Node{Type: TypeHTTP, Config: []byte(`{}`)}, "config.url is required"},
		{"http bad method", workflow.Node{Type: TypeHTTP, Config: []byte(`{"method": "TRACE", "url": "https://a.example"}`)}, "config.method"},
		{"http bad scheme", workflow.Node{Type: TypeHTTP, Config: []byte(`{"url": "ftp://a.example/x"}`)}, "http:// or https://"},
		{"http host placeholder", workflow.Node{Type: TypeHTTP, Config: []byte(`{"url": "https://${inputs.host}/x"}`)}, "set the node's provider field"},
		{"http host placeholder with provider", workflow.Node{Type: TypeHTTP, Provider: "exchange", Config: []byte(`{"url": "https://${inputs.host}/x"}`)}, ""},
		{"http bad provider", workflow.Node{Type: TypeHTTP, Provider: "binance.com", Config: []byte(`{"url": "https://a.example"}`)}, "provider"},
		{"http unclosed placeholder", workflow.Node{Type: TypeHTTP, Config: []byte(`{"url": "https://a.example/${inputs.x"}`)}, "not closed"},
		{"http bad query expression", workflow.Node{Type: TypeHTTP, Config: []byte(`{"url": "https://a.example", "query": {"q": "${inputs.x +}"}}`)}, "config.query.q"},
		{"http bad body template", workflow.Node{Type: TypeHTTP, Config: []byte(`{"url": "https://a.example", "body": {"a": [1, "${nope.x}"]}}`)}, "config.body: a[1]"},
		{"http unknown output variable", workflow.Node{Type: TypeHTTP, Config: []byte(`{"url": "https://a.example", "outputs": {"x": "response.price"}}`)}, "config.outputs.x"},
		{"http bad secret name", workflow.Node{Type: TypeHTTP, Config: []byte(`{"url": "https://a.example", "headers": {"k": "${env:1X}"}}`)}, "environment variable name"},
		{"http unknown field", workflow.Node{Type: TypeHTTP, Config: []byte(`{"url": "https://a.example", "timeout": "1s"}`)}, "unknown field"},
		{"nats minimal", workflow.Node{Type: TypeNATSRequest, Config: []byte(`{"subject": "md.quote"}`)}, ""},
		{"nats no subject", workflow.Node{Type: TypeNATSRequest, Config: []byte(`{}`)}, "config.subject is required"},
		{"nats wildcard", workflow.Node{Type: TypeNATSRequest, Config: []byte(`{"subject": "md.*"}`)}, "wildcards"},
		{"nats subject placeholder", workflow.Node{Type: TypeNATSRequest, Config: []byte(`{"subject": "md.${inputs.symbol}"}`)}, "set the node's provider field"},
		{"nats status is http only", workflow.Node{Type: TypeNATSRequest, Config: []byte(`{"subject": "md.quote", "outputs": {"s": "status"}}`)}, "config.outputs.s"},
		{"retry on transform", workflow.Node{Type: "transform", Retry: &workflow.Retry{MaxAttempts: 3}, Config: []byte(`{"outputs": {"x": "1"}}`)}, "provider nodes only"},
		{"provider on delay", workflow.Node{Type: "delay", Provider: "x", Config: []byte(`{"duration": "1s"}`)}, "provider nodes only"},
	}
	reg := providerRegistry(t, http.DefaultClient)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compileNode(t, reg, tc.node)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, workflow.ErrInvalid) || !strings.Contains(err.Error(), `node "n1"`) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want ErrInvalid naming n1 and mentioning %q", err, tc.want)
			}
		})
	}
}

func TestProviderNames(t *testing.T) {
	reg := providerRegistry(t, http.DefaultClient)
	for _, tc := range []struct {
		node workflow.Node
		want string
	}{
		{workflow.Node{Type: TypeHTTP, Config: []byte(`{"url": "https://api.binance.com/api/v3/ticker?symbol=X"}`)}, "api_binance_com"},
		{workflow.Node{Type: TypeHTTP, Config: []byte(`{"url": "http://127.0.0.1:8080/q/${inputs.symbol}"}`)}, "127_0_0_1_8080"},
		{workflow.Node{Type: TypeHTTP, Provider: "binance", Config: []byte(`{"url": "https://api.binance.com/x"}`)}, "binance"},
		{workflow.Node{Type: TypeNATSRequest, Config: []byte(`{"subject": "md.quote.get"}`)}, "md_quote_get"},
		{workflow.Node{Type: TypeNATSRequest, Provider: "md", Config: []byte(`{"subject": "md.${inputs.symbol}"}`)}, "md"},
	} {
		r, err := compileNode(t, reg, tc.node)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.(Provider).Provider(); got != tc.want {
			t.Errorf("%s: provider %q, want %q", tc.node.Config, got, tc.want)
		}
	}
}

func TestTemplates(t *testing.T) {
	env := testEnv()
	for _, tc := range []struct {
		src  string
		want any
	}{
		{"${inputs.qty}", 0.5},
		{"${inputs.qty * 2} BTC", "1 BTC"},
		{"${nodes.quote.mid}", 64990.5},
		{"${ {'a': inputs.symbol}.a }", "BTCUSDT"},
		{`${ "}" + inputs.symbol }`, "}BTCUSDT"},
		{"${[1, 2]}/x", "[1,2]/x"},
		{"$${literal}", "${literal}"},
		{"${inputs.qty > 0}", true},
		{"${0.0000001}", 1e-7},
		{"p=${0.0000001}", "p=0.0000001"},
	} {
		tpl, err := compileTemplate(tc.src)
		if err != nil {
			t.Errorf("%s: %v", tc.src, err)
			continue
		}
		got, err := tpl.value(env, nil)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s = %#v (%v), want %#v", tc.src, got, err, tc.want)
		}
	}
	tpl, _ := compileTemplate("q=${inputs.missing}")
	if _, err := tpl.text(env, nil); KindOf(err) != KindExpression || !strings.Contains(err.Error(), "null") {
		t.Errorf("a null placeholder in text: %v", err)
	}
}

func ExampleTemplate() {
	tpl, _ := compileTemplate("https://api.example.com/v1/${inputs.symbol}/depth?limit=${inputs.levels * 10}")
	url, _ := tpl.text(&Env{Inputs: map[string]any{"symbol": "BTCUSDT", "levels": 5.0}}, nil)
	fmt.Println(url)
	// Output: https://api.example.com/v1/BTCUSDT/depth?limit=50
}

// A POST or PATCH that timed out, broke or met a 5xx may have been processed: it is
// not repeated unless the node declares itself idempotent. What surely was not
// processed (no connection, a 429) is retried.
func TestHTTPNonIdempotentCallsAreNotRepeatedAfterTheyMayHaveActed(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hang":
			<-r.Context().Done()
		case "/drop":
			conn, _, _ := w.(http.Hijacker).Hijack()
			_ = conn.Close()
		default:
			code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
			if code == http.StatusServiceUnavailable || code == http.StatusTooManyRequests {
				w.Header().Set("Retry-After", "1")
			}
			w.WriteHeader(code)
		}
	}))
	defer srv.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	reg := providerRegistry(t, srv.Client())
	cases := []struct {
		method, url, extra string
		unrepeatable       bool
	}{
		{"POST", srv.URL + "/503", "", true}, // even with Retry-After: a proxy may have passed it on
		{"POST", srv.URL + "/500", "", true},
		{"POST", srv.URL + "/408", "", true},
		{"POST", srv.URL + "/drop", "", true},
		{"POST", srv.URL + "/hang", "", true},
		{"PATCH", srv.URL + "/502", "", true},
		{"POST", srv.URL + "/429", "", false},
		{"POST", closed.URL + "/x", "", false},
		{"POST", srv.URL + "/503", `"idempotent": true,`, false},
		{"POST", srv.URL + "/hang", `"idempotent": true,`, false},
		{"GET", srv.URL + "/503", "", false},
		{"PUT", srv.URL + "/500", "", false},
		{"DELETE", srv.URL + "/drop", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.url[strings.LastIndex(tc.url, "/"):]+" "+tc.extra, func(t *testing.T) {
			r := mustCompile(t, reg, TypeHTTP, `{`+tc.extra+` "method": "`+tc.method+`", "url": "`+tc.url+`"}`)
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			_, err := r.Run(ctx, Input{Env: testEnv(), Attempt: 1})
			if err == nil || IsUnrepeatable(err) != tc.unrepeatable {
				t.Fatalf("err %v: unrepeatable %v, want %v", err, IsUnrepeatable(err), tc.unrepeatable)
			}
			if tc.unrepeatable && !strings.Contains(err.Error(), `"idempotent": true`) {
				t.Errorf("the error does not say how to allow retries: %v", err)
			}
			if ctx.Err() == nil && !IsTransient(err) {
				t.Errorf("a failure that counts in the breaker is not transient: %v", err)
			}
		})
	}
}
