package nodes

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/flowguard/flowguard/internal/policy"
)

// egressClient is the worker's http client under an allow-list.
func egressClient(t *testing.T, allow ...string) *http.Client {
	t.Helper()
	e, err := policy.ParseEgress(allow)
	if err != nil {
		t.Fatal(err)
	}
	return e.Client(4)
}

// port returns the port of a test server's URL.
func port(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	_, p, err := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// An http node reaches only what --egress-allow lists; internal addresses are
// refused unless listed, after DNS too, and a redirect to another host is refused.
func TestHTTPEgressIsRefusedWithAClearKind(t *testing.T) {
	var hits atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte(`{}`))
	}))
	defer target.Close()
	p := port(t, target)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if to := r.URL.Query().Get("to"); to != "" {
			http.Redirect(w, r, to, http.StatusFound)
			return
		}
		_, _ = w.Write([]byte(`{}`))
	}))
	defer redirector.Close()

	cases := []struct {
		name  string
		allow []string
		url   string
		want  string // empty: allowed
	}{
		{"loopback not listed", nil, "http://127.0.0.1:" + p + "/", "127.0.0.1 is not on the worker's egress allow-list"},
		{"loopback listed", []string{"127.0.0.1"}, "http://127.0.0.1:" + p + "/", ""},
		{"loopback listed as a CIDR", []string{"127.0.0.0/8"}, "http://127.0.0.1:" + p + "/", ""},
		{"metadata address", []string{"127.0.0.1"}, "http://169.254.169.254/latest/meta-data/", "not on the worker's egress allow-list"},
		{"private address", []string{"127.0.0.1"}, "http://10.0.0.1/", "not on the worker's egress allow-list"},
		{"host not listed", []string{"127.0.0.1"}, "http://api.example.invalid/", "host api.example.invalid is not on the worker's egress allow-list"},
		// A listed name that resolves to an internal address: refused at dial time.
		{"name resolving to loopback", []string{"localhost"}, "http://localhost:" + p + "/", "internal"},
		{"redirect to the metadata address", []string{"127.0.0.1"}, redirector.URL + "/?to=http://169.254.169.254/latest/meta-data/", "redirected to http://169.254.169.254"},
		{"redirect to another listed host", []string{"127.0.0.1", "localhost", "127.0.0.0/8"}, redirector.URL + "/?to=http://localhost:" + p + "/", "another host"},
		{"redirect within the host", []string{"127.0.0.1"}, redirector.URL + "/?to=/done", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			r := mustCompile(t, providerRegistry(t, egressClient(t, tc.allow...)), TypeHTTP, `{"url": "`+tc.url+`"}`)
			_, err := run(t, r)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || KindOf(err) != KindEgress || IsTransient(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v (kind %s), want a permanent %s naming %q", err, KindOf(err), KindEgress, tc.want)
			}
			if hits.Load() != before {
				t.Error("the refused call reached the server")
			}
		})
	}
}

// A secret is sent only to the hosts it is bound to: not to another listed host,
// wherever the workflow puts it.
func TestHTTPSecretIsNeverSentToAHostItIsNotBoundTo(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	other := "http://localhost:" + port(t, srv) // the same server under a name API_KEY is not bound to
	client := egressClient(t, "127.0.0.0/8", "localhost")
	for _, config := range []string{
		`{"url": "` + other + `/", "headers": {"X-Key": "${env:API_KEY}"}}`,
		`{"url": "` + other + `/k/${env:API_KEY}"}`,
		`{"url": "` + other + `/", "query": {"sig": "${env:API_KEY}"}}`,
		`{"method": "POST", "url": "` + other + `/", "body": {"key": "${env:API_KEY}"}}`,
		`{"url": "` + other + `/", "headers": {"X-Key": "${inputs.key}"}}`,
	} {
		r := mustCompile(t, providerRegistry(t, client), TypeHTTP, config)
		env := testEnv()
		env.Inputs["key"] = secretValue // a secret that reached the inputs some other way
		_, err := r.Run(t.Context(), Input{Env: env, Attempt: 1})
		if err == nil || KindOf(err) != KindSecret || !strings.Contains(err.Error(), "--secret-env API_KEY@localhost") || leaks(err.Error()) {
			t.Errorf("%s: err = %v, want kind %s naming the binding", config, err, KindSecret)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("%d calls carrying the secret reached the host", n)
	}
	// Bound to 127.0.0.1, the same call there goes through.
	r := mustCompile(t, providerRegistry(t, client), TypeHTTP, `{"url": "`+srv.URL+`/", "headers": {"X-Key": "${env:API_KEY}"}}`)
	if _, err := run(t, r); err != nil || hits.Load() != 1 {
		t.Fatalf("bound host: %v, %d calls", err, hits.Load())
	}
}
