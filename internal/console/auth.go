package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"
)

// sessionCookie holds a signed-in browser's session.
const sessionCookie = "flowguard_console"

// csrfField is the form field that carries the CSRF token of a session.
const csrfField = "csrf"

// auth decides who may act. Reading needs nothing (the console binds to loopback
// by default); every action needs the token or the basic-auth user and password,
// either in the request's Authorization header (for scripts) or through a session
// signed in on the login page. A session's actions also carry its CSRF token, and
// a browser's request from another origin is refused.
type auth struct {
	token          string
	user, password string
	key            [32]byte // signs sessions and CSRF tokens; new at every start
}

func newAuth(cfg Config) *auth {
	a := &auth{token: cfg.Token, user: cfg.BasicUser, password: cfg.BasicPassword}
	_, _ = rand.Read(a.key[:])
	return a
}

// enabled reports whether actions are possible at all.
func (a *auth) enabled() bool { return a.token != "" || a.user != "" }

func (a *auth) sign(what string) string {
	m := hmac.New(sha256.New, a.key[:])
	m.Write([]byte(what))
	return hex.EncodeToString(m.Sum(nil))
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// credentials reports whether a token, or a user and password, are the configured ones.
func (a *auth) credentials(token, user, password string) bool {
	switch {
	case a.token != "" && token != "":
		return equal(token, a.token)
	case a.user != "" && user != "":
		return equal(user, a.user) && equal(password, a.password)
	}
	return false
}

// header reports whether r carries valid credentials in its Authorization header.
func (a *auth) header(r *http.Request) bool {
	if user, password, ok := r.BasicAuth(); ok {
		return a.credentials("", user, password)
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && a.credentials(token, "", "")
}

// session returns the signed-in session of r, "" when there is none.
func (a *auth) session(r *http.Request) string {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return ""
	}
	id, sig, ok := strings.Cut(c.Value, ".")
	if !ok || !equal(sig, a.sign("session:"+id)) {
		return ""
	}
	return id
}

// newSession returns the cookie of a new session.
func (a *auth) newSession(secure bool) *http.Cookie {
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	return &http.Cookie{Name: sessionCookie, Value: id + "." + a.sign("session:"+id), Path: "/",
		HttpOnly: true, Secure: secure, SameSite: http.SameSiteStrictMode}
}

// csrf returns the CSRF token of a session.
func (a *auth) csrf(session string) string {
	if session == "" {
		return ""
	}
	return a.sign("csrf:" + session)
}

// Reasons an action is refused; each says what to do.
const (
	refusedDisabled = "actions are disabled: start the console with --token, or --basic-user and --basic-password"
	refusedSignIn   = "this action needs the console's token (or user and password): sign in first"
	refusedCSRF     = "the form's CSRF token is missing or stale (the console restarted, or the request came from another site): reload the page and try again"
	refusedOrigin   = "the request came from another origin; act from the console's own page"
)

// allow returns why r may not act, "" when it may.
func (a *auth) allow(r *http.Request) string {
	if !a.enabled() {
		return refusedDisabled
	}
	if a.header(r) {
		return "" // a script with credentials; browsers never add them by themselves
	}
	session := a.session(r)
	if session == "" {
		return refusedSignIn
	}
	if !sameOrigin(r) {
		return refusedOrigin
	}
	if !equal(r.PostFormValue(csrfField), a.csrf(session)) {
		return refusedCSRF
	}
	return ""
}

// sameOrigin reports whether a browser's request came from the console's own
// pages: its Origin (or, lacking one, its Referer) names the console's host.
func sameOrigin(r *http.Request) bool {
	from := r.Header.Get("Origin")
	if from == "null" {
		return false
	}
	if from == "" {
		from = r.Header.Get("Referer")
	}
	if from == "" {
		return r.Header.Get("Sec-Fetch-Site") == "" || r.Header.Get("Sec-Fetch-Site") == "same-origin"
	}
	u, err := url.Parse(from)
	return err == nil && u.Host == r.Host
}
