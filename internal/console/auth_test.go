package console

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestActionsNeedCredentialsAndTheCSRFToken(t *testing.T) {
	const token = "0123456789abcdef-token"
	a := newAuth(Config{Token: token})
	session := a.newSession(false)
	id, _, _ := strings.Cut(session.Value, ".")
	form := func(csrf string) url.Values {
		return url.Values{"scope": {"global"}, csrfField: {csrf}}
	}
	for _, tc := range []struct {
		name    string
		auth    *auth
		form    url.Values
		prepare func(r *http.Request)
		refused string
	}{
		{"no credentials", a, form(""), nil, refusedSignIn},
		{"a wrong token", a, form(""), func(r *http.Request) { r.Header.Set("Authorization", "Bearer nope") }, refusedSignIn},
		{"the token in the header", a, form(""), func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }, ""},
		{"a session without the CSRF token", a, form(""), func(r *http.Request) { r.AddCookie(session) }, refusedCSRF},
		{"a session with another session's CSRF token", a, form(a.csrf("other")), func(r *http.Request) { r.AddCookie(session) }, refusedCSRF},
		{"a forged session", a, form(a.csrf("forged")), func(r *http.Request) {
			r.AddCookie(&http.Cookie{Name: sessionCookie, Value: "forged.0000"})
		}, refusedSignIn},
		{"a session from another origin", a, form(a.csrf(id)), func(r *http.Request) {
			r.AddCookie(session)
			r.Header.Set("Origin", "https://evil.example")
		}, refusedOrigin},
		{"a session with its CSRF token", a, form(a.csrf(id)), func(r *http.Request) {
			r.AddCookie(session)
			r.Header.Set("Origin", "http://console.test")
		}, ""},
		{"basic auth", newAuth(Config{BasicUser: "ops", BasicPassword: "pw"}), form(""), func(r *http.Request) { r.SetBasicAuth("ops", "pw") }, ""},
		{"basic auth, wrong password", newAuth(Config{BasicUser: "ops", BasicPassword: "pw"}), form(""), func(r *http.Request) { r.SetBasicAuth("ops", "no") }, refusedSignIn},
		{"actions disabled", newAuth(Config{}), form(""), func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }, refusedDisabled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "http://console.test/emergency", strings.NewReader(tc.form.Encode()))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tc.prepare != nil {
				tc.prepare(r)
			}
			if got := tc.auth.allow(r); got != tc.refused {
				t.Fatalf("allow = %q, want %q", got, tc.refused)
			}
		})
	}
}

func TestRefusedActionAnswers403AndChangesNothing(t *testing.T) {
	s := testServer(t, Config{Token: "0123456789abcdef-token"})
	rec := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/emergency", strings.NewReader("scope=global&action=halt&reason=x&confirm=global"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	s.Handler().ServeHTTP(rec, r) // s.client is nil: reaching it would panic
	if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "sign in first") {
		t.Fatalf("%d %s", rec.Code, rec.Body.String())
	}
}

func TestConfigRefusesAShortTokenAndHalfBasicAuth(t *testing.T) {
	for _, c := range []Config{{Token: "short"}, {BasicUser: "ops"}, {Token: "0123456789abcdef-token", BasicUser: "ops", BasicPassword: "pw"}} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func TestSignInReturnsOnlyToTheConsole(t *testing.T) {
	for next, want := range map[string]string{
		"/emergency?x=1":       "/emergency?x=1",
		"":                     "/executions",
		"https://evil.example": "/executions",
		"//evil.example":       "/executions",
		"/\\evil.example":      "/executions",
		"emergency":            "/executions",
	} {
		if got := localPath(next); got != want {
			t.Errorf("localPath(%q) = %q, want %q", next, got, want)
		}
	}
}

func TestOnlyTheConsoleReportsOutcomes(t *testing.T) {
	s := testServer(t, Config{Token: "0123456789abcdef-token"})
	for _, tc := range []struct {
		query string
		shown bool
	}{
		{s.outcome("halt global stored", ""), true},
		{s.outcome("", "give a reason"), true},
		{"ok=" + url.QueryEscape("call +1 555 to resume"), false},
		{"ok=forged&sig=" + s.auth.sign("outcome:other\x00"), false},
	} {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/dlq?"+tc.query, nil))
		if shown := strings.Contains(rec.Body.String(), `class="flash`); shown != tc.shown {
			t.Errorf("%s: shown %v, want %v", tc.query, shown, tc.shown)
		}
	}
}
