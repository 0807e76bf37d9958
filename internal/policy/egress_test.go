package policy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestEgressAllowList(t *testing.T) {
	e, err := ParseEgress([]string{"api.binance.com", "*.kraken.com", "10.1.0.0/16", "192.168.5.7", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	for host, allowed := range map[string]bool{
		"api.binance.com": true, "API.Binance.com": true, "fapi.binance.com": false,
		"api.kraken.com": true, "kraken.com": false, "evil-kraken.com": false,
		"10.1.2.3": true, "10.2.0.1": false, "192.168.5.7": true, "[::1]": true, "127.0.0.1": false,
		"169.254.169.254": false, "8.8.8.8": false,
	} {
		err := e.CheckHost(host)
		if (err == nil) != allowed || err != nil && !errors.Is(err, ErrEgressRefused) {
			t.Errorf("CheckHost(%s) = %v, want allowed %v", host, err, allowed)
		}
	}
	for addr, allowed := range map[string]bool{
		"8.8.8.8": true, "2606:4700::1111": true, "10.1.2.3": true, "::ffff:10.1.2.3": true, "::1": true,
		"127.0.0.1": false, "10.2.0.1": false, "172.16.0.1": false, "192.168.1.1": false, "169.254.169.254": false,
		"100.64.0.1": false, "0.0.0.0": false, "fe80::1": false, "fd00::1": false, "::ffff:127.0.0.1": false, "224.0.0.1": false,
	} {
		err := e.CheckAddr(netip.MustParseAddr(addr))
		if (err == nil) != allowed {
			t.Errorf("CheckAddr(%s) = %v, want allowed %v", addr, err, allowed)
		}
	}
	var none Egress
	if err := none.CheckHost("api.binance.com"); err == nil || !strings.Contains(err.Error(), "--egress-allow") {
		t.Errorf("the zero value allowed a host: %v", err)
	}
	for _, bad := range []string{"https://api.binance.com", "api.binance.com:443", "10.0.0.0/33", "*.", "a b"} {
		if _, err := ParseEgress([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
