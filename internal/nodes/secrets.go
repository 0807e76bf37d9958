package nodes

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Redacted replaces a secret's value wherever it would appear.
const Redacted = "[REDACTED]"

var secretNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Secrets are the environment variables of the worker that workflows may read with
// ${env:NAME} placeholders. Only the variables listed by the operator are shared,
// so that a workflow (perhaps sent inline by a bot) cannot read the worker's other
// settings. Each is bound to the hosts that may receive it: an http node sends a
// secret only to a host it is bound to. Their values never leave a node in clear
// otherwise: the node's outputs and errors are redacted, so no event, log line or
// KV value carries them. A nil *Secrets shares nothing.
type Secrets struct {
	values   map[string]string
	forms    map[string][]string        // each value as it may be sent: raw, query- and path-escaped
	hosts    map[string]map[string]bool // the hosts each secret may be sent to over http
	replacer *strings.Replacer
}

// NewSecrets reads the listed variables with lookup (os.LookupEnv in the worker).
// Each must be set and not empty. An entry NAME@host binds the secret to a host
// that http nodes may send it to; list the name once per host. A secret listed
// without a host is sent to no http host (nats_request nodes may use it).
func NewSecrets(entries []string, lookup func(string) (string, bool)) (*Secrets, error) {
	s := &Secrets{values: map[string]string{}, forms: map[string][]string{}, hosts: map[string]map[string]bool{}}
	var forms []string
	for _, entry := range entries {
		name, host, bound := strings.Cut(entry, "@")
		if !secretNamePattern.MatchString(name) {
			return nil, fmt.Errorf("secret %q is not an environment variable name (letters, digits and _, not starting with a digit), optionally followed by @host", entry)
		}
		if bound {
			host = strings.ToLower(host)
			if host == "" || strings.ContainsAny(host, "/:@ ") {
				return nil, fmt.Errorf("secret %q: bind it to a host name without scheme or port, as %s@api.example.com", entry, name)
			}
			if s.hosts[name] == nil {
				s.hosts[name] = map[string]bool{}
			}
			s.hosts[name][host] = true
		}
		if _, seen := s.values[name]; seen {
			continue
		}
		v, ok := lookup(name)
		if !ok || v == "" {
			return nil, fmt.Errorf("secret %s is listed in --secret-env but the environment variable is not set or empty; set it, or remove it from the list", name)
		}
		s.values[name] = v
		// The value as sent (raw, in a query, in a path), longest first, so that a
		// value containing another is replaced whole.
		for _, f := range []string{v, url.QueryEscape(v), url.PathEscape(v)} {
			if !slices.Contains(s.forms[name], f) {
				s.forms[name] = append(s.forms[name], f)
			}
			if !slices.Contains(forms, f) {
				forms = append(forms, f)
			}
		}
	}
	slices.SortFunc(forms, func(a, b string) int { return len(b) - len(a) })
	pairs := make([]string, 0, 2*len(forms))
	for _, f := range forms {
		pairs = append(pairs, f, Redacted)
	}
	s.replacer = strings.NewReplacer(pairs...)
	return s, nil
}

// Names lists the shared variables, sorted.
func (s *Secrets) Names() []string {
	if s == nil {
		return nil
	}
	names := make([]string, 0, len(s.values))
	for n := range s.values {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// checkRecipient returns a KindSecret error when what an http call sends to host
// (its URL, headers and body) holds a secret that is not bound to host.
func (s *Secrets) checkRecipient(host string, target *url.URL, header http.Header, body []byte) error {
	if s == nil {
		return nil
	}
	host = strings.ToLower(host)
	var sent strings.Builder
	sent.WriteString(target.String())
	for name, values := range header {
		sent.WriteString("\n" + name + ": " + strings.Join(values, ", "))
	}
	sent.Write(body)
	text := sent.String()
	for _, name := range s.Names() {
		if s.hosts[name][host] {
			continue
		}
		for _, f := range s.forms[name] {
			if strings.Contains(text, f) {
				return Permanent(KindSecret, fmt.Errorf("secret %s would be sent to %s, a host it is not bound to; if that host may receive it, start the worker with --secret-env %s@%s", name, host, name, host))
			}
		}
	}
	return nil
}

// value returns a shared variable's value.
func (s *Secrets) value(name string) (string, error) {
	if s != nil {
		if v, ok := s.values[name]; ok {
			return v, nil
		}
	}
	return "", Permanent(KindSecret, fmt.Errorf("${env:%s}: the worker does not share environment variable %s; start the worker with --secret-env %s (and the variable set)", name, name, name))
}

// Redact replaces every secret value in text.
func (s *Secrets) Redact(text string) string {
	if s == nil || len(s.values) == 0 {
		return text
	}
	return s.replacer.Replace(text)
}

// redactValue returns v, a decoded JSON value, with every secret in its strings and keys replaced.
func (s *Secrets) redactValue(v any) any {
	if s == nil || len(s.values) == 0 {
		return v
	}
	switch t := v.(type) {
	case string:
		return s.Redact(t)
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[s.Redact(k)] = s.redactValue(e)
		}
		return out
	case map[string]string:
		out := make(map[string]string, len(t))
		for k, e := range t {
			out[s.Redact(k)] = s.Redact(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = s.redactValue(e)
		}
		return out
	}
	return v
}

// redactOutputs redacts a node's outputs.
func (s *Secrets) redactOutputs(out map[string]any) map[string]any {
	if s == nil || len(s.values) == 0 {
		return out
	}
	return s.redactValue(out).(map[string]any)
}

// redactError returns err with every secret removed from its message. A changed
// error keeps its kind, transience and wait, and matches the context errors err
// matched, but no longer unwraps to the original, which held the secret.
func (s *Secrets) redactError(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	clean := s.Redact(msg)
	if clean == msg {
		return err
	}
	r := &redactedError{msg: clean}
	for _, sentinel := range []error{context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, sentinel) {
			r.cause = sentinel
		}
	}
	var ne *Error
	if errors.As(err, &ne) {
		return &Error{Kind: ne.Kind, Transient: ne.Transient, Wait: ne.Wait, Err: r}
	}
	return r
}

type redactedError struct {
	msg   string
	cause error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.cause }
