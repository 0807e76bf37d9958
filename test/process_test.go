package test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flowguard/flowguard/internal/natstest"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds cmd/worker and cmd/publisher once per test run.
func binaries(t testing.TB) (worker, publisher string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "flowguard-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-race", "-o", binDir+"/", "../cmd/worker", "../cmd/publisher")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "worker"), filepath.Join(binDir, "publisher")
}

// proc is a process started by a test.
type proc struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// start runs a binary until it exits or the test ends (then it is killed).
func start(t testing.TB, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), out: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(bin), p.out.String())
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t testing.TB, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("process did not exit within %s; output:\n%s", within, p.out.String())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

// signal sends sig to the process.
func (p *proc) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// freePort returns a TCP port free at the time of the call.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// embeddedWorker runs the worker binary with its embedded server on a free port,
// waits until it consumes, and returns it with a function that runs the publisher
// binary against it and returns its exit code and output.
func embeddedWorker(t *testing.T, args ...string) (*proc, func(args ...string) (int, string)) {
	t.Helper()
	workerBin, publisherBin := binaries(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	w := start(t, workerBin, append([]string{"--listen", strings.TrimPrefix(url, "nats://"), "--data-dir", t.TempDir(), "--log-format", "json"}, args...)...)
	natstest.WaitFor(t, 20*time.Second, func() error {
		if !strings.Contains(w.out.String(), "consumer bound") {
			return errors.New("worker not consuming yet")
		}
		return nil
	})
	return w, func(args ...string) (int, string) {
		p := start(t, publisherBin, append([]string{"--nats-url", url}, args...)...)
		return p.wait(t, 30*time.Second), p.out.String()
	}
}

// TestCommandsEndToEnd runs the worker binary with its embedded server and drives
// it with the publisher binary, as the README's quickstart does.
func TestCommandsEndToEnd(t *testing.T) {
	w, publisher := embeddedWorker(t)

	if code, out := publisher("deploy", "../examples/workflows/price-check.json"); code != 0 || !strings.Contains(out, "deployed workflow price-check") {
		t.Fatalf("deploy: exit %d\n%s", code, out)
	}
	if code, out := publisher("deploy", "--dry-run", "../examples/workflows/price-check.request.json"); code != 1 || !strings.Contains(out, "missing properties") {
		t.Errorf("deploying a request file: exit %d\n%s", code, out)
	}

	code, out := publisher("run", "price-check", "--file", "../examples/workflows/price-check.request.json", "--request-id", "cli-1", "--wait")
	if code != 0 || !strings.Contains(out, "execution_completed") || !strings.Contains(out, "node=limit_price") {
		t.Fatalf("run --wait: exit %d\n%s", code, out)
	}
	code, out = publisher("run", "price-check", "--bot", "b1", "-i", "bid=oops", "-i", "ask=1", "-i", "max_spread_bps=1", "-i", "edge_bps=1", "-i", "symbol=X", "--wait")
	if code != 1 || !strings.Contains(out, "execution failed: expression") {
		t.Errorf("a failing execution: exit %d\n%s", code, out)
	}
	code, out = publisher("run", "not-deployed", "--wait")
	if code != 3 || !strings.Contains(out, "unknown_workflow") {
		t.Errorf("a rejected request: exit %d\n%s", code, out)
	}

	code, out = publisher("status", "cli-1")
	if code != 0 || !strings.Contains(out, "completed") || !strings.Contains(out, "exec_price-check_cli-1") {
		t.Errorf("status: exit %d\n%s", code, out)
	}
	code, out = publisher("status", "--workflow", "price-check", "--json")
	if code != 0 || !strings.Contains(out, `"status": "failed"`) {
		t.Errorf("status of the latest execution: exit %d\n%s", code, out)
	}
	code, out = publisher("status", "nope")
	if code != 1 || !strings.Contains(out, "no execution nope") {
		t.Errorf("status of an unknown execution: exit %d\n%s", code, out)
	}

	w.signal(t, syscall.SIGTERM)
	if code := w.wait(t, 30*time.Second); code != 0 {
		t.Errorf("worker exited %d on SIGTERM", code)
	}
}

// TestBreakerCommandsEndToEnd forces a provider's breaker open and closed with
// the publisher binary while a worker binary runs, as an operator would for an
// exchange's maintenance window.
func TestBreakerCommandsEndToEnd(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"price": 64990.5}`))
	}))
	defer api.Close()
	w, publisher := embeddedWorker(t, "--profile", "production", "--breaker-scope", "cluster", "--egress-allow", "127.0.0.1")
	def := filepath.Join(t.TempDir(), "quote.json")
	if err := os.WriteFile(def, []byte(`{"id": "quote", "nodes": [{"id": "ticker", "type": "http", "provider": "exchange",
		"config": {"url": "`+api.URL+`/ticker", "outputs": {"price": "body.price"}}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := publisher("deploy", def); code != 0 {
		t.Fatalf("deploy: exit %d\n%s", code, out)
	}

	if code, out := publisher("breaker", "open", "exchange", "--reason", "exchange maintenance", "--for", "1h", "--by", "ops"); code != 0 || !strings.Contains(out, "forced open on every worker") {
		t.Fatalf("breaker open: exit %d\n%s", code, out)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		if !strings.Contains(w.out.String(), "provider breaker forced open by an operator") {
			return errors.New("the worker has not obeyed yet")
		}
		return nil
	})
	if code, out := publisher("run", "quote", "--wait"); code != 1 || !strings.Contains(out, "circuit_open") || !strings.Contains(out, "exchange maintenance") {
		t.Errorf("run while forced open: exit %d\n%s", code, out)
	}
	if code, out := publisher("breaker", "status", "exchange"); code != 0 || !strings.Contains(out, "forced OPEN until") || !strings.Contains(out, "by ops") {
		t.Errorf("breaker status: exit %d\n%s", code, out)
	}
	if code, out := publisher("breaker", "open", "api.example.com", "--reason", "x"); code != 1 || !strings.Contains(out, "provider") {
		t.Errorf("an invalid provider: exit %d\n%s", code, out)
	}
	if code, out := publisher("breaker", "open", "exchange"); code == 0 || !strings.Contains(out, "--reason") {
		t.Errorf("an order without a reason: exit %d\n%s", code, out)
	}

	if code, out := publisher("breaker", "close", "exchange", "--reason", "maintenance over"); code != 0 {
		t.Fatalf("breaker close: exit %d\n%s", code, out)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		if !strings.Contains(w.out.String(), "provider breaker closed by an operator") {
			return errors.New("the worker has not obeyed yet")
		}
		return nil
	})
	if code, out := publisher("run", "quote", "--wait"); code != 0 || !strings.Contains(out, "64990.5") {
		t.Errorf("run after close: exit %d\n%s", code, out)
	}
	if code, out := publisher("breaker", "status"); code != 0 || !strings.Contains(out, "closed (breakers reset)") {
		t.Errorf("breaker status of all: exit %d\n%s", code, out)
	}
	w.signal(t, syscall.SIGTERM)
	if code := w.wait(t, 30*time.Second); code != 0 {
		t.Errorf("worker exited %d on SIGTERM", code)
	}
}

// TestWorkerSettingsPrecedence checks that flags win over environment variables,
// which win over the --config file.
func TestWorkerSettingsPrecedence(t *testing.T) {
	workerBin, _ := binaries(t)
	dir := t.TempDir()
	config := filepath.Join(dir, "worker.json")
	if err := os.WriteFile(config, []byte(`{"profile": "production", "concurrency": 3, "worker_id": "from-file"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(workerBin, "--config", config, "--listen", url, "--data-dir", filepath.Join(dir, "data"),
		"--log-format", "json", "--worker-id", "from-flag")
	cmd.Env = append(os.Environ(), "FLOWGUARD_PROFILE=staging", "FLOWGUARD_WORKER_ID=from-env")
	p := &proc{cmd: cmd, out: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-p.done })
	natstest.WaitFor(t, 20*time.Second, func() error {
		if !strings.Contains(p.out.String(), `"message":"worker started"`) {
			return errors.New("worker not started")
		}
		return nil
	})
	out := p.out.String()
	for _, want := range []string{`"profile":"staging"`, `"concurrency":3`, `"worker_id":"from-flag"`} {
		if !strings.Contains(out, want) {
			t.Errorf("start log lacks %s:\n%s", want, out)
		}
	}
}
