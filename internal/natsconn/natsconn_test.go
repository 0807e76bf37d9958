package natsconn

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/natstest"
)

// pki is a CA with a server certificate for 127.0.0.1 and a client certificate,
// written as PEM files.
type pki struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

func newPKI(t *testing.T, name string) pki {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p := pki{ca: filepath.Join(dir, "ca.pem")}
	writePEM(t, p.ca, "CERTIFICATE", caDER)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) (certFile, keyFile string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile = filepath.Join(dir, cn+".pem"), filepath.Join(dir, cn+"-key.pem")
		writePEM(t, certFile, "CERTIFICATE", der)
		writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
		return certFile, keyFile
	}
	p.serverCert, p.serverKey = issue(2, "server", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	p.clientCert, p.clientKey = issue(3, "client", x509.ExtKeyUsageClientAuth, nil)
	return p
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// serverTLS is the server side of p; verify requires client certificates.
func serverTLS(t *testing.T, p pki, verify bool) func(*server.Options) {
	return func(o *server.Options) {
		cfg, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: p.serverCert, KeyFile: p.serverKey, CaFile: p.ca, Verify: verify})
		if err != nil {
			t.Fatal(err)
		}
		o.TLSConfig, o.TLSVerify, o.TLSTimeout = cfg, verify, 2
	}
}

// userNKey makes a user NKey and writes its seed to a file.
func userNKey(t *testing.T) (pub, seedFile string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ = kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile = filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	return pub, seedFile
}

// operatorMode makes an operator, an account and a user of it: the server trusts
// the operator and knows the account; credsFile holds the user's JWT and seed.
func operatorMode(t *testing.T) (configure func(*server.Options), credsFile string, otherCredsFile string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	operator, err := nkeys.CreateOperator()
	must(err)
	opPub, _ := operator.PublicKey()
	opClaims := jwt.NewOperatorClaims(opPub)
	opJWT, err := opClaims.Encode(operator)
	must(err)
	opClaims, err = jwt.DecodeOperatorClaims(opJWT)
	must(err)

	userCreds := func(accountSigner nkeys.KeyPair, accountPub string) string {
		user, err := nkeys.CreateUser()
		must(err)
		userPub, _ := user.PublicKey()
		uc := jwt.NewUserClaims(userPub)
		uc.IssuerAccount = accountPub
		userJWT, err := uc.Encode(accountSigner)
		must(err)
		seed, _ := user.Seed()
		creds, err := jwt.FormatUserConfig(userJWT, seed)
		must(err)
		f, err := os.CreateTemp(t.TempDir(), "*.creds")
		must(err)
		_, err = f.Write(creds)
		must(err)
		must(f.Close())
		return f.Name()
	}

	resolver := &server.MemAccResolver{}
	account, err := nkeys.CreateAccount()
	must(err)
	accPub, _ := account.PublicKey()
	accJWT, err := jwt.NewAccountClaims(accPub).Encode(operator)
	must(err)
	must(resolver.Store(accPub, accJWT))

	// The system account, which a server in operator mode with JetStream needs.
	system, err := nkeys.CreateAccount()
	must(err)
	sysPub, _ := system.PublicKey()
	sysJWT, err := jwt.NewAccountClaims(sysPub).Encode(operator)
	must(err)
	must(resolver.Store(sysPub, sysJWT))

	// An account the server does not know, under the same operator.
	unknown, err := nkeys.CreateAccount()
	must(err)
	unknownPub, _ := unknown.PublicKey()

	configure = func(o *server.Options) {
		o.TrustedOperators, o.AccountResolver, o.SystemAccount = []*jwt.OperatorClaims{opClaims}, resolver, sysPub
	}
	return configure, userCreds(account, accPub), userCreds(unknown, unknownPub)
}

func TestConnectWithEveryKindOfCredential(t *testing.T) {
	p := newPKI(t, "flowguard")
	other := newPKI(t, "other")
	nkeyPub, nkeySeed := userNKey(t)
	_, strangerSeed := userNKey(t)
	jwtMode, creds, strangerCreds := operatorMode(t)

	userPass := func(o *server.Options) { o.Username, o.Password = "bot", "s3cret" }
	token := func(o *server.Options) { o.Authorization = "t0ken" }
	nkey := func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: nkeyPub}} }

	cases := []struct {
		name   string
		server []func(*server.Options)
		client Options
		// want is empty when the connection must succeed, else what the error must say.
		want []string
	}{
		{name: "user and password", server: []func(*server.Options){userPass},
			client: Options{User: "bot", Password: "s3cret"}},
		{name: "wrong password", server: []func(*server.Options){userPass},
			client: Options{User: "bot", Password: "nope"}, want: []string{"Authorization Violation", "refused these credentials"}},
		{name: "no credentials where required", server: []func(*server.Options){userPass},
			want: []string{"Authorization Violation", "requires credentials", "--nats-user"}},
		{name: "token", server: []func(*server.Options){token}, client: Options{Token: "t0ken"}},
		{name: "wrong token", server: []func(*server.Options){token},
			client: Options{Token: "guess"}, want: []string{"refused these credentials"}},
		{name: "nkey seed", server: []func(*server.Options){nkey}, client: Options{NKeySeed: nkeySeed}},
		{name: "unknown nkey", server: []func(*server.Options){nkey},
			client: Options{NKeySeed: strangerSeed}, want: []string{"refused these credentials"}},
		{name: "missing nkey seed file", server: []func(*server.Options){nkey},
			client: Options{NKeySeed: filepath.Join(t.TempDir(), "none.nk")}, want: []string{"read nkey seed", "no such file"}},
		{name: "creds file", server: []func(*server.Options){jwtMode}, client: Options{Creds: creds}},
		{name: "creds of an unknown account", server: []func(*server.Options){jwtMode},
			client: Options{Creds: strangerCreds}, want: []string{"refused these credentials"}},
		{name: "missing creds file", server: []func(*server.Options){jwtMode},
			client: Options{Creds: filepath.Join(t.TempDir(), "none.creds")}, want: []string{"no such file", "--nats-creds"}},
		{name: "TLS with the CA", server: []func(*server.Options){serverTLS(t, p, false)}, client: Options{TLSCA: p.ca}},
		{name: "TLS without the CA", server: []func(*server.Options){serverTLS(t, p, false)},
			want: []string{"certificate signed by unknown authority", "--tls-ca"}},
		{name: "TLS with another CA", server: []func(*server.Options){serverTLS(t, p, false)},
			client: Options{TLSCA: other.ca}, want: []string{"unknown authority", "--tls-ca"}},
		{name: "TLS client certificate", server: []func(*server.Options){serverTLS(t, p, true)},
			client: Options{TLSCA: p.ca, TLSCert: p.clientCert, TLSKey: p.clientKey}},
		{name: "TLS client certificate missing", server: []func(*server.Options){serverTLS(t, p, true)},
			client: Options{TLSCA: p.ca}, want: []string{"refused the TLS connection", "--tls-cert"}},
		{name: "TLS client certificate of another CA", server: []func(*server.Options){serverTLS(t, p, true)},
			client: Options{TLSCA: p.ca, TLSCert: other.clientCert, TLSKey: other.clientKey}, want: []string{"--tls-cert", "signed by a CA the server trusts"}},
		{name: "TLS and a password", server: []func(*server.Options){serverTLS(t, p, true), userPass},
			client: Options{TLSCA: p.ca, TLSCert: p.clientCert, TLSKey: p.clientKey, User: "bot", Password: "s3cret"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := &server.Options{}
			for _, configure := range tc.server {
				configure(opts)
			}
			srv := natstest.StartWith(t, opts)
			o := tc.client
			o.URL = srv.ClientURL()
			nc, err := Connect(o, "test", zerolog.Nop())
			if tc.want == nil {
				if err != nil {
					t.Fatalf("connect: %v", err)
				}
				defer nc.Close()
				if err := nc.Flush(); err != nil {
					t.Fatalf("flush: %v", err)
				}
				return
			}
			if err == nil {
				nc.Close()
				t.Fatalf("connected; want an error saying %q", tc.want)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}

func TestConnectExplainsThatNoServerAnswers(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("nats://%s", l.Addr())
	l.Close()
	_, err = Connect(Options{URL: url}, "test", zerolog.Nop())
	if !errors.Is(err, nats.ErrNoServers) || !strings.Contains(err.Error(), "no server answered; check the URL") {
		t.Fatalf("err = %v", err)
	}
}

func TestOptionsRejectIncoherentCredentials(t *testing.T) {
	for _, o := range []Options{
		{User: "u", Password: "p", Token: "t"},
		{Token: "t", Creds: "c"},
		{User: "u"},
		{TLSCert: "c"},
		{PingInterval: -time.Second},
	} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}
