// Package natsconn connects to NATS with the credentials users configure, and keeps
// reconnecting for as long as the process runs.
package natsconn

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
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
}

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
	return nil
}

// Connect connects as name. The connection reconnects forever; state changes are logged.
func Connect(o Options, name string, log zerolog.Logger) (*nats.Conn, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	opts := []nats.Option{
		nats.Name(name),
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
	nc, err := nats.Connect(o.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w; check the URL and that the server runs, and the credentials if it requires them", o.URL, err)
	}
	return nc, nil
}
