package policy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// ErrEgressRefused is matched by every refusal of an http node's call: a host not
// on the allow-list, an address in a refused range, a redirect to another host.
var ErrEgressRefused = errors.New("egress refused")

// Egress is the allow-list of the hosts http nodes may reach (--egress-allow).
// An entry is a host name ("api.binance.com"), a wildcard of its subdomains
// ("*.binance.com"), an IP address or a CIDR ("10.1.0.0/16"). A call goes through
// when its URL's host is a listed name, or an address in a listed CIDR. The address
// it connects to is checked again at dial time, after DNS: loopback, private,
// link-local, shared (CGNAT), multicast and unspecified addresses are refused
// unless a listed CIDR holds them, so a listed name that resolves to an internal
// address (DNS rebinding) does not pass. The zero value allows nothing.
type Egress struct {
	names     map[string]bool
	wildcards []string // ".binance.com" for "*.binance.com"
	prefixes  []netip.Prefix
}

// ParseEgress reads the entries of --egress-allow.
func ParseEgress(entries []string) (*Egress, error) {
	e := &Egress{names: map[string]bool{}}
	for _, raw := range entries {
		entry := strings.ToLower(strings.TrimSpace(raw))
		switch {
		case entry == "":
			continue
		case strings.Contains(entry, "/"):
			p, err := netip.ParsePrefix(entry)
			if err != nil {
				return nil, fmt.Errorf("--egress-allow %q: not a CIDR (%v); write it as 10.1.0.0/16", raw, err)
			}
			e.prefixes = append(e.prefixes, p.Masked())
		case strings.HasPrefix(entry, "*."):
			if !validHost(entry[2:]) {
				return nil, fmt.Errorf("--egress-allow %q: not a wildcard of a host name; write it as *.example.com", raw)
			}
			e.wildcards = append(e.wildcards, entry[1:])
		default:
			if a, err := netip.ParseAddr(strings.Trim(entry, "[]")); err == nil {
				e.prefixes = append(e.prefixes, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
				continue
			}
			if !validHost(entry) {
				return nil, fmt.Errorf("--egress-allow %q: not a host name, IP address or CIDR; write hosts without scheme or port (api.example.com)", raw)
			}
			e.names[entry] = true
		}
	}
	return e, nil
}

func validHost(h string) bool {
	if h == "" || len(h) > 253 || strings.HasPrefix(h, ".") || strings.HasSuffix(h, ".") {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// CheckHost returns nil when a call to host (a URL's host name or address,
// without port) may go ahead before dialing, else an error matching
// ErrEgressRefused that says how to allow it.
func (e *Egress) CheckHost(host string) error {
	host = strings.ToLower(strings.Trim(host, "[]"))
	if a, err := netip.ParseAddr(host); err == nil {
		if e.listedAddr(a) {
			return nil
		}
		return fmt.Errorf("%w: address %s is not on the worker's egress allow-list; add it or its CIDR to --egress-allow if workflows may call it", ErrEgressRefused, host)
	}
	if e.names[host] {
		return nil
	}
	for _, w := range e.wildcards {
		if strings.HasSuffix(host, w) {
			return nil
		}
	}
	return fmt.Errorf("%w: host %s is not on the worker's egress allow-list; add it to --egress-allow if workflows may call it", ErrEgressRefused, host)
}

// CheckAddr returns nil when a connection to a resolved address may be made: a
// listed CIDR holds it, or it is a public address.
func (e *Egress) CheckAddr(a netip.Addr) error {
	a = a.Unmap()
	if e.listedAddr(a) || !internal(a) {
		return nil
	}
	return fmt.Errorf("%w: address %s is loopback, private, link-local or otherwise internal; list it or its CIDR in --egress-allow if workflows may call it", ErrEgressRefused, a)
}

func (e *Egress) listedAddr(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range e.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// sharedRange is 100.64.0.0/10, carrier-grade NAT, internal to a provider's network.
var sharedRange = netip.MustParsePrefix("100.64.0.0/10")

// internal reports whether a is an address no http node should reach by default.
func internal(a netip.Addr) bool {
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() || sharedRange.Contains(a)
}

// Client returns the HTTP client of http nodes: it reaches only what e allows,
// checks the address it dials after DNS, refuses redirects to another host, ignores
// proxy environment variables (a proxy would hide the address dialed), and keeps
// up to idlePerHost connections to each provider warm, so that as many concurrent
// calls do not each open a connection.
func (e *Egress) Client(idlePerHost int) *http.Client {
	dialer := &net.Dialer{
		Timeout: 10 * time.Second, KeepAlive: 30 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: cannot read the dialed address %q: %v", ErrEgressRefused, address, err)
			}
			return e.CheckAddr(ap.Addr())
		},
	}
	transport := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrEgressRefused, err)
			}
			if err := e.CheckHost(host); err != nil {
				return nil, err
			}
			return dialer.DialContext(ctx, network, address)
		},
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          0, // no overall limit: the per-host one bounds each provider
		MaxIdleConnsPerHost:   max(idlePerHost, 2),
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{Transport: transport, CheckRedirect: sameHostRedirect}
}

// maxRedirects bounds the redirects followed within one host.
const maxRedirects = 5

// sameHostRedirect follows a redirect only within the host first called: another
// host might be internal, or receive the secrets in the request's headers.
func sameHostRedirect(req *http.Request, via []*http.Request) error {
	first := via[0].URL
	if !strings.EqualFold(req.URL.Host, first.Host) || req.URL.Scheme != first.Scheme && req.URL.Scheme != "https" {
		return fmt.Errorf("%w: %s redirected to %s://%s, another host; http nodes follow redirects only within the host they call: call %s directly if it is meant",
			ErrEgressRefused, first.Host, req.URL.Scheme, req.URL.Host, req.URL.Host)
	}
	if len(via) > maxRedirects {
		return fmt.Errorf("%s: stopped after %d redirects", first.Host, maxRedirects)
	}
	return nil
}
