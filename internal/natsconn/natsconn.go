// Package natsconn connects to NATS with the credentials users configure, and keeps
// reconnecting for as long as the process runs.
package natsconn

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/resilience"
)

// Options say where and as whom to connect. Set at most one of user and password,
// token, NKey seed file and creds file; TLS combines with any of them.
type Options struct {
	URL string `help:"NATS server URL(s), comma separated." env:"FLOWGUARD_NATS_URL" name:"nats-url"`

	User     string `help:"NATS user name." env:"FLOWGUARD_NATS_USER" name:"nats-user"`
	Password string `help:"NATS password." env:"FLOWGUARD_NATS_PASSWORD" name:"nats-password"`
	Token    string `help:"NATS authentication token." env:"FLOWGUARD_NATS_TOKEN" name:"nats-token"`
	NKeySeed string `help:"File holding an NKey seed." env:"FLOWGUARD_NATS_NKEY" name:"nats-nkey" type:"path"`
	Creds    string `help:"NATS credentials file (JWT and seed)." env:"FLOWGUARD_NATS_CREDS" name:"nats-creds" type:"path"`

	TLSCA   string `help:"CA certificate file to verify the server." env:"FLOWGUARD_NATS_TLS_CA" name:"tls-ca" type:"path"`
	TLSCert string `help:"Client certificate file (with --tls-key)." env:"FLOWGUARD_NATS_TLS_CERT" name:"tls-cert" type:"path"`
	TLSKey  string `help:"Client key file (with --tls-cert)." env:"FLOWGUARD_NATS_TLS_KEY" name:"tls-key" type:"path"`

	PingInterval time.Duration `help:"Interval between pings to the server; after two unanswered pings the connection is re-established, so a cut network is noticed within three intervals." default:"10s" env:"FLOWGUARD_NATS_PING_INTERVAL" name:"nats-ping-interval"`
}

// DefaultPingInterval is the interval between pings when Options gives none.
const DefaultPingInterval = 10 * time.Second

// Validate checks that the credentials are coherent.
func (o Options) Validate() error {
	n := 0
	for _, set := range []bool{o.User != "" || o.Password != "", o.Token != "", o.NKeySeed != "", o.Creds != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return errors.New("give one way to authenticate: user and password, token, nkey or creds, not several")
	}
	if (o.User == "") != (o.Password == "") {
		return errors.New("--nats-user and --nats-password go together")
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if o.PingInterval < 0 {
		return fmt.Errorf("--nats-ping-interval must not be negative, got %s", o.PingInterval)
	}
	return nil
}

// hasCredentials reports whether any way to authenticate is set.
func (o Options) hasCredentials() bool {
	return o.User != "" || o.Token != "" || o.NKeySeed != "" || o.Creds != "" || o.TLSCert != ""
}

// Connect connects as name, with extra options applied last. The connection
// reconnects forever; state changes are logged. A failed connection's error says why
// (no server, refused credentials, untrusted certificate...) and what to change.
func Connect(o Options, name string, log zerolog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.PingInterval == 0 {
		o.PingInterval = DefaultPingInterval
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.PingInterval(o.PingInterval),
		nats.MaxPingsOutstanding(2),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn().Err(err).Msg("nats disconnected")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("nats reconnected")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				log.Error().Err(err).Msg("the NATS server refused an operation: this user lacks a permission; give it the permissions of its role (docs/clusters.md, Roles)")
				return
			}
			ev := log.Warn().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("nats async error")
		}),
	}
	switch {
	case o.User != "":
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	case o.Token != "":
		opts = append(opts, nats.Token(o.Token))
	case o.Creds != "":
		opts = append(opts, nats.UserCredentials(o.Creds))
	case o.NKeySeed != "":
		opt, err := nats.NkeyOptionFromSeed(o.NKeySeed)
		if err != nil {
			return nil, fmt.Errorf("read nkey seed %s: %w", o.NKeySeed, err)
		}
		opts = append(opts, opt)
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if o.TLSCert != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	nc, err := nats.Connect(o.URL, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", o.URL, explain(o, err))
	}
	return nc, nil
}

// waitLogInterval is how often Wait says what it waits for.
const waitLogInterval = 5 * time.Second

// Wait connects like Connect, but when no server answers yet (not started, a name
// that does not resolve yet, a cluster still starting) it tries again with backoff
// until one does or ctx ends, logging what it waits for every few seconds. Other
// failures (refused credentials, TLS) are returned at once: waiting cannot fix them.
func Wait(ctx context.Context, o Options, name string, log zerolog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	var nc *nats.Conn
	var logged time.Duration
	err := resilience.WaitIO(ctx, Unreachable, func(err error, waited time.Duration) {
		if logged == 0 || waited-logged >= waitLogInterval {
			logged = max(waited, time.Nanosecond)
			log.Warn().Err(err).Str("nats_url", redact(o.URL)).Dur("waited", waited.Round(time.Second)).Msg("waiting for the NATS server")
		}
	}, func(context.Context) error {
		var err error
		nc, err = Connect(o, name, log, extra...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return nc, nil
}

// Unreachable reports whether a connection failed because no server answered:
// worth trying again later.
func Unreachable(err error) bool {
	var dns *net.DNSError
	var op *net.OpError
	return errors.Is(err, nats.ErrNoServers) || errors.As(err, &dns) ||
		(errors.As(err, &op) && op.Op == "dial") || errors.Is(err, io.EOF) ||
		errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
}

// Refused reports whether a connection failed because the server refused the
// credentials given (or their absence), rather than because it could not be reached.
func Refused(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired)
}

// redact hides the passwords of URLs written as nats://user:password@host.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

// explain adds to a connection error what to do about it.
func explain(o Options, err error) error {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var remote *net.OpError
	switch {
	case errors.Is(err, nats.ErrAuthorization) && !o.hasCredentials():
		return fmt.Errorf("%w: the server requires credentials; give --nats-user and --nats-password, --nats-token, --nats-nkey, --nats-creds or a client certificate (--tls-cert, --tls-key)", err)
	case errors.Is(err, nats.ErrAuthorization):
		return fmt.Errorf("%w: the server refused these credentials; check the user and password, token, nkey seed, creds file or client certificate given", err)
	case errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked), errors.Is(err, nats.ErrAccountAuthExpired):
		return fmt.Errorf("%w: get a new creds file from the account's operator and give it with --nats-creds", err)
	case errors.Is(err, nats.ErrSecureConnRequired):
		return fmt.Errorf("%w: the server requires TLS; give --tls-ca with the CA that signed its certificate (and --tls-cert, --tls-key if it checks clients)", err)
	case errors.As(err, &unknownCA):
		return fmt.Errorf("%w: the server's certificate is not signed by a trusted CA; give the CA that signed it with --tls-ca", err)
	case errors.As(err, &hostname):
		return fmt.Errorf("%w: the server's certificate does not name the host of the URL; connect with a name the certificate holds", err)
	case errors.As(err, &remote) && remote.Op == "remote error", // a TLS alert from the server
		errors.Is(err, nats.ErrTLS): // or the server closed the connection after the handshake
		return fmt.Errorf("%w: the server refused the TLS connection; it checks client certificates: give --tls-cert and --tls-key with a certificate signed by a CA the server trusts", err)
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: check the paths given to --nats-nkey, --nats-creds, --tls-ca, --tls-cert and --tls-key", err)
	case errors.Is(err, nats.ErrNoServers):
		return fmt.Errorf("%w: no server answered; check the URL and that the server runs", err)
	}
	return fmt.Errorf("%w; check the URL and that the server runs, and the credentials if it requires them", err)
}
