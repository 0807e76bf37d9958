package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/nats-io/nats.go"
	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/natstest"
)

// Container tests: flowguard as docker-compose.yml deploys it, a 3-node NATS
// JetStream cluster and worker containers on a private network, with images built
// from scratch by deploy/build-images.sh. The test reaches the nodes through ports
// published on 127.0.0.1.

// clusterAckWait is the workers' ack wait: how long a lost worker's requests wait.
const clusterAckWait = 3 * time.Second

// clusterWorkflow waits, then orders: a replay that ordered twice would show.
const clusterWorkflow = `{"id": %q, "nodes": [
  {"id": "slow", "type": "delay", "timeout": "2m", "config": {"duration": %q}},
  {"id": "buy", "type": "order", "depends_on": ["slow"], "config": {"symbol": "'BTCUSDT'", "side": "'buy'", "quantity": "0.001"}}
]}`

// cluster is three NATS containers and the worker containers of one test.
type cluster struct {
	t        *testing.T
	ctx      context.Context
	docker   client.APIClient
	tag      string
	net      *testcontainers.DockerNetwork
	nodes    map[string]*testcontainers.DockerContainer
	urls     []string // the nodes' client ports on 127.0.0.1
	mu       sync.Mutex
	workers  map[string]*testcontainers.DockerContainer
	operator *harness // reads everything, issues emergency commands, deploys
	bot      *harness // publishes requests
}

// requireDocker skips the test when no Docker daemon answers, or fails it when
// FLOWGUARD_REQUIRE_DOCKER=1 (as in CI).
func requireDocker(t *testing.T) *testcontainers.DockerProvider {
	t.Helper()
	// Ryuk, testcontainers' reaper, is an image to pull; the tests remove what they create.
	t.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	tclog.SetDefault(tclog.NewNoopLogger())
	p, err := testcontainers.NewDockerProvider()
	if err == nil {
		err = p.Health(context.Background())
	}
	if err != nil {
		if os.Getenv("FLOWGUARD_REQUIRE_DOCKER") == "1" {
			t.Fatalf("no Docker daemon answers (%v), and FLOWGUARD_REQUIRE_DOCKER=1 requires the container tests: start the Docker daemon", err)
		}
		t.Skipf("container tests skipped: no Docker daemon answers (%v); set FLOWGUARD_REQUIRE_DOCKER=1 to make this a failure", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// newCluster builds the images, starts three NATS nodes on a new network and waits
// until JetStream answers.
func newCluster(t *testing.T) *cluster {
	t.Helper()
	p := requireDocker(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var b [4]byte
	_, _ = rand.Read(b[:])
	c := &cluster{t: t, ctx: ctx, docker: p.Client(), tag: "test-" + hex.EncodeToString(b[:]),
		nodes: map[string]*testcontainers.DockerContainer{}, workers: map[string]*testcontainers.DockerContainer{}}

	build := exec.Command("bash", "../deploy/build-images.sh")
	build.Env = append(os.Environ(), "TAG="+c.tag)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("deploy/build-images.sh: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		for _, image := range []string{"worker", "publisher", "nats"} {
			_, _ = c.docker.ImageRemove(context.Background(), "flowguard/"+image+":"+c.tag, client.ImageRemoveOptions{Force: true, PruneChildren: true})
		}
	})

	nw, err := tcnetwork.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.net = nw
	t.Cleanup(func() { _ = nw.Remove(context.Background()) })

	env := map[string]string{}
	for user, pw := range rolePasswords {
		env["FLOWGUARD_"+strings.ToUpper(user)+"_PASSWORD"] = pw
	}
	for _, name := range []string{"nats1", "nats2", "nats3"} {
		port := freePort(t)
		env["NATS_SERVER_NAME"] = name
		node, err := testcontainers.Run(ctx, "flowguard/nats:"+c.tag,
			testcontainers.WithCmd("--config", "/etc/nats/nats.conf"),
			testcontainers.WithFiles(
				testcontainers.ContainerFile{HostFilePath: "../deploy/nats/nats.conf", ContainerFilePath: "/etc/nats/nats.conf", FileMode: 0o644},
				testcontainers.ContainerFile{HostFilePath: "../deploy/nats/auth.conf", ContainerFilePath: "/etc/nats/auth.conf", FileMode: 0o644},
			),
			testcontainers.WithEnv(env),
			// On 127.0.0.1, at a fixed port, so that a restarted node is found where it was.
			testcontainers.WithExposedPorts("4222/tcp"),
			testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
				hc.PortBindings = network.PortMap{network.MustParsePort("4222/tcp"): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(port)}}}
			}),
			tcnetwork.WithNetwork([]string{name}, nw),
			testcontainers.WithWaitStrategy(wait.ForLog("Server is ready").WithStartupTimeout(30*time.Second)),
		)
		c.cleanupContainer(node, name)
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		c.nodes[name] = node
		c.urls = append(c.urls, fmt.Sprintf("nats://127.0.0.1:%d", port))
	}

	url := strings.Join(c.urls, ",")
	reconnect := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}
	c.operator = harnessOn(t, connectAs(t, url, "operator", reconnect...))
	c.bot = harnessOn(t, connectAs(t, url, "b1", reconnect...))
	natstest.WaitFor(t, 60*time.Second, func() error {
		_, err := c.operator.js.AccountInfo(ctx)
		return err
	})
	return c
}

// cleanupContainer terminates a container when the test ends, showing its logs
// first when the test failed.
func (c *cluster) cleanupContainer(ctr *testcontainers.DockerContainer, name string) {
	c.t.Cleanup(func() {
		if ctr == nil {
			return
		}
		if c.t.Failed() {
			c.t.Logf("%s logs:\n%s", name, tail(c.logs(ctr), 60))
		}
		_ = ctr.Terminate(context.Background())
	})
}

// logs returns everything a container wrote.
func (c *cluster) logs(ctr *testcontainers.DockerContainer) string {
	rc, err := ctr.Logs(context.Background())
	if err != nil {
		return fmt.Sprintf("(no logs: %v)", err)
	}
	defer rc.Close()
	var b bytes.Buffer
	_, _ = io.Copy(&b, rc)
	return b.String()
}

func tail(s string, lines int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// workerEnv configures a worker container as docker-compose.yml does, with a short
// ack wait and ping interval.
func (c *cluster) workerEnv(id string) map[string]string {
	return map[string]string{
		"FLOWGUARD_NATS_URL":           "nats://nats1:4222,nats://nats2:4222,nats://nats3:4222",
		"FLOWGUARD_NATS_USER":          "worker",
		"FLOWGUARD_NATS_PASSWORD":      rolePasswords["worker"],
		"FLOWGUARD_WORKER_ID":          id,
		"FLOWGUARD_REPLICAS":           "3",
		"FLOWGUARD_CONCURRENCY":        "8",
		"FLOWGUARD_ACK_WAIT":           clusterAckWait.String(),
		"FLOWGUARD_SHUTDOWN_GRACE":     "1s",
		"FLOWGUARD_NATS_PING_INTERVAL": "1s",
		"FLOWGUARD_LOG_FORMAT":         "json",
	}
}

// startWorker starts a worker container and waits until it consumes.
func (c *cluster) startWorker(t *testing.T, id string) *testcontainers.DockerContainer {
	t.Helper()
	w, err := testcontainers.Run(c.ctx, "flowguard/worker:"+c.tag,
		testcontainers.WithEnv(c.workerEnv(id)),
		tcnetwork.WithNetwork([]string{id}, c.net),
		testcontainers.WithWaitStrategy(wait.ForLog("consumer bound").WithStartupTimeout(90*time.Second)),
	)
	c.cleanupContainer(w, id)
	if err != nil {
		t.Fatalf("start worker %s: %v", id, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.workers[id] = w
	return w
}

// workerIDs returns the ids of the running workers.
func (c *cluster) workerIDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for id := range c.workers {
		ids = append(ids, id)
	}
	return ids
}

// kill sends SIGKILL to worker id.
func (c *cluster) kill(t *testing.T, id string) {
	t.Helper()
	c.mu.Lock()
	w := c.workers[id]
	delete(c.workers, id)
	c.mu.Unlock()
	if _, err := c.docker.ContainerKill(c.ctx, w.GetContainerID(), client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatalf("kill %s: %v", id, err)
	}
}

// publisher runs the publisher image once, as user, and returns its exit code and output.
func (c *cluster) publisher(t *testing.T, user string, args ...string) (int, string) {
	t.Helper()
	p, err := testcontainers.Run(c.ctx, "flowguard/publisher:"+c.tag,
		testcontainers.WithEnv(map[string]string{
			"FLOWGUARD_NATS_URL":      "nats://nats1:4222,nats://nats2:4222,nats://nats3:4222",
			"FLOWGUARD_NATS_USER":     user,
			"FLOWGUARD_NATS_PASSWORD": rolePasswords[user],
		}),
		testcontainers.WithCmd(args...),
		tcnetwork.WithNetwork(nil, c.net),
		testcontainers.WithWaitStrategy(wait.ForExit().WithExitTimeout(60*time.Second)),
	)
	c.cleanupContainer(p, "publisher "+strings.Join(args, " "))
	if err != nil {
		t.Fatalf("publisher %s: %v", strings.Join(args, " "), err)
	}
	st, err := p.State(c.ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st.ExitCode, c.logs(p)
}

// streamLeader returns the node leading a stream.
func (c *cluster) streamLeader(t *testing.T, name string) string {
	t.Helper()
	var leader string
	natstest.WaitFor(t, 30*time.Second, func() error {
		s, err := c.operator.js.Stream(c.ctx, name)
		if err != nil {
			return err
		}
		leader = s.CachedInfo().Cluster.Leader
		return nil
	})
	return leader
}

// waitHealthy waits until every stream has a leader and every replica is current.
func (c *cluster) waitHealthy(t *testing.T, within time.Duration) {
	t.Helper()
	natstest.WaitFor(t, within, func() error {
		names := c.operator.js.StreamNames(c.ctx)
		for name := range names.Name() {
			s, err := c.operator.js.Stream(c.ctx, name)
			if err != nil {
				return err
			}
			ci := s.CachedInfo().Cluster
			if ci == nil || ci.Leader == "" {
				return fmt.Errorf("stream %s has no leader", name)
			}
			if len(ci.Replicas) != 2 {
				return fmt.Errorf("stream %s has %d followers", name, len(ci.Replicas))
			}
			for _, r := range ci.Replicas {
				if !r.Current || r.Offline {
					return fmt.Errorf("stream %s: replica %s not current", name, r.Name)
				}
			}
		}
		return names.Err()
	})
}

// submitSteadily publishes n requests of workflowID, one every interval, retrying
// each (same request id, so it is stored once) while the cluster cannot take it.
// It returns the ids, and calls at(i) before request i.
func (c *cluster) submitSteadily(t *testing.T, workflowID, prefix string, n int, interval time.Duration, at func(i int)) []string {
	t.Helper()
	ids := make([]string, n)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := range ids {
		<-tick.C
		at(i)
		ids[i] = fmt.Sprintf("%s-%04d", prefix, i)
		c.submit(t, workflowID, ids[i])
	}
	return ids
}

// submit publishes a request of bot b1, retrying it (same request id, so it is
// stored once) while the cluster cannot take it.
func (c *cluster) submit(t *testing.T, workflowID, id string) {
	t.Helper()
	req := &contract.Request{WorkflowID: workflowID, BotID: "b1", RequestID: id}
	natstest.WaitFor(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
		defer cancel()
		_, err := c.bot.client.Submit(ctx, req)
		return err
	})
}

// submitMany publishes n requests with ids prefix-0000... and returns them.
func (c *cluster) submitMany(t *testing.T, workflowID, prefix string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%04d", prefix, i)
		c.submit(t, workflowID, ids[i])
	}
	return ids
}

// fillDelay is the delay of the workflows whose executions fill sees running: all of
// them at once, between the last one's start and the first one's end. Publishing
// them and reading their statuses takes seconds on a busy machine. (The slow node's
// timeout, 2m, is longer than any delay the subtests give it.)
const fillDelay = "30s"

// fill publishes as many requests as the workers have slots, waits until each is
// running, and returns them with the worker running each. Their workflow's delay
// must leave fill the time to see them all running (see fillDelay).
func (c *cluster) fill(t *testing.T, workflowID, prefix string) (ids []string, runningOn map[string]string) {
	t.Helper()
	ids = c.submitMany(t, workflowID, prefix, 8*len(c.workerIDs()))
	natstest.WaitFor(t, time.Minute, func() error {
		runningOn = map[string]string{}
		for _, id := range ids {
			st, err := c.operator.client.Status(c.ctx, workflowID, id)
			if err != nil || st.Status != contract.StatusRunning {
				return fmt.Errorf("%s not running yet", id)
			}
			runningOn[id] = st.WorkerID
		}
		return nil
	})
	return ids, runningOn
}

// busiest returns the worker running the most of the executions and those.
func busiest(runningOn map[string]string) (worker string, executions []string) {
	byWorker := map[string][]string{}
	for id, w := range runningOn {
		byWorker[w] = append(byWorker[w], id)
		if len(byWorker[w]) > len(executions) {
			worker, executions = w, byWorker[w]
		}
	}
	return worker, executions
}

func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("container test")
	}
	started := time.Now()
	c := newCluster(t)
	t.Logf("images built and NATS cluster formed in %s", time.Since(started).Round(time.Millisecond))

	t.Run("a worker says when the cluster cannot place its replicas", func(t *testing.T) {
		env := c.workerEnv("too-many")
		env["FLOWGUARD_REPLICAS"] = "4"
		w, err := testcontainers.Run(c.ctx, "flowguard/worker:"+c.tag,
			testcontainers.WithEnv(env),
			tcnetwork.WithNetwork(nil, c.net),
			testcontainers.WithWaitStrategy(wait.ForExit().WithExitTimeout(60*time.Second)),
		)
		c.cleanupContainer(w, "too-many")
		if err != nil {
			t.Fatal(err)
		}
		st, err := w.State(c.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if out := c.logs(w); st.ExitCode != 1 || !strings.Contains(out, "the servers cannot place 4 replicas: run a cluster of at least 4 JetStream servers, or lower --replicas") {
			t.Errorf("exit %d\n%s", st.ExitCode, out)
		}
	})

	for _, id := range []string{"w1", "w2", "w3"} {
		c.startWorker(t, id)
	}
	t.Logf("workers consuming after %s", time.Since(started).Round(time.Millisecond))

	t.Run("every request completes exactly once while a NATS node stops", func(t *testing.T) {
		op := c.operator.on(t)
		op.deploy(fmt.Sprintf(clusterWorkflow, "cl-node", "200ms"))
		leader := c.streamLeader(t, contract.StreamExec)
		node := c.nodes[leader]
		ids := c.submitSteadily(t, "cl-node", "n", 120, 25*time.Millisecond, func(i int) {
			if i == 40 {
				stop := 5 * time.Second
				if err := node.Stop(c.ctx, &stop); err != nil {
					t.Fatalf("stop %s: %v", leader, err)
				}
				t.Logf("stopped %s, the leader of %s, after %d requests", leader, contract.StreamExec, i)
			}
		})
		assertExactlyOnce(t, op, "cl-node", ids, 2*time.Minute)
		if err := node.Start(c.ctx); err != nil {
			t.Fatalf("restart %s: %v", leader, err)
		}
		c.waitHealthy(t, time.Minute)
		assertExactlyOnce(t, op, "cl-node", ids, time.Second)
	})

	t.Run("a killed worker's executions resume on the others", func(t *testing.T) {
		op := c.operator.on(t)
		op.deploy(fmt.Sprintf(clusterWorkflow, "cl-kill", fillDelay))
		ids, running := c.fill(t, "cl-kill", "k")
		victim, inFlight := busiest(running)
		c.kill(t, victim)
		killed := time.Now()
		assertExactlyOnce(t, op, "cl-kill", ids, 2*time.Minute)
		var last time.Time
		for _, id := range inFlight {
			st, err := op.client.Status(c.ctx, "cl-kill", id)
			if err != nil || st.WorkerID == victim || st.Attempt < 2 {
				t.Errorf("%s: %+v %v; want it finished by another worker", id, st, err)
			}
			for _, ev := range op.events("cl-kill", id) {
				if ev.Type == contract.ExecutionStarted && ev.Resumed && ev.Time.After(last) {
					last = ev.Time
				}
			}
		}
		t.Logf("%d executions of the killed worker resumed elsewhere within %s (ack wait %s)", len(inFlight), last.Sub(killed).Round(time.Millisecond), clusterAckWait)
		c.startWorker(t, victim+"-new")
	})

	t.Run("a halt reaches every worker and no node starts after it", func(t *testing.T) {
		op := c.operator.on(t)
		op.deploy(fmt.Sprintf(clusterWorkflow, "cl-halt", "1m"))
		ids, _ := c.fill(t, "cl-halt", "h")
		ack, err := op.client.Emergency(c.ctx, "workflow.cl-halt", contract.EmergencyCommand{Action: "halt", Reason: "container test", IssuedBy: "operator"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { op.command("workflow.cl-halt", "resume", "container test done") })
		stored, err := op.js.Stream(c.ctx, contract.StreamEmergency)
		if err != nil {
			t.Fatal(err)
		}
		halt, err := stored.GetMsg(c.ctx, ack)
		if err != nil {
			t.Fatal(err)
		}
		haltedBy := map[string]int{}
		for _, id := range ids {
			st := op.waitStatus("cl-halt", id, 10*time.Second)
			if st.Status != contract.StatusHalted {
				t.Errorf("%s: %s", id, st.Status)
			}
			haltedBy[st.WorkerID]++
		}
		for _, w := range c.workerIDs() {
			if haltedBy[w] == 0 {
				t.Errorf("worker %s halted none of its executions: %v", w, haltedBy)
			}
		}
		late := "h-late"
		c.submit(t, "cl-halt", late)
		if st := op.waitStatus("cl-halt", late, 10*time.Second); st.Status != contract.StatusHalted {
			t.Errorf("a request after the halt: %s", st.Status)
		}
		for _, m := range op.messages(contract.StreamEvents, "flow.events.*.cl-halt.*.node_started") {
			meta, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			if meta.Timestamp.After(halt.Time) {
				t.Errorf("a node started after the halt was stored: %s", m.Subject())
			}
		}
		for _, m := range op.messages(contract.StreamOrders, "flow.orders.>") {
			if strings.Contains(string(m.Data()), `"cl-halt"`) {
				t.Errorf("a halted workflow ordered: %s", m.Data())
			}
		}
	})

	t.Run("a worker cut off the network gives its requests up and runs none twice", func(t *testing.T) {
		op := c.operator.on(t)
		op.deploy(fmt.Sprintf(clusterWorkflow, "cl-cut", fillDelay))
		ids, running := c.fill(t, "cl-cut", "c")
		victim, inFlight := busiest(running)
		c.mu.Lock()
		w := c.workers[victim]
		c.mu.Unlock()
		if _, err := c.docker.NetworkDisconnect(c.ctx, c.net.ID, client.NetworkDisconnectOptions{Container: w.GetContainerID(), Force: true}); err != nil {
			t.Fatal(err)
		}
		cut := time.Now()
		assertExactlyOnce(t, op, "cl-cut", ids, 2*time.Minute)
		t.Logf("%d requests of the cut-off worker finished elsewhere within %s", len(inFlight), time.Since(cut).Round(time.Millisecond))
		for _, id := range inFlight {
			if st, err := op.client.Status(c.ctx, "cl-cut", id); err != nil || st.WorkerID == victim {
				t.Errorf("%s: %+v %v; want it finished by another worker", id, st, err)
			}
		}

		if _, err := c.docker.NetworkConnect(c.ctx, c.net.ID, client.NetworkConnectOptions{
			Container: w.GetContainerID(), EndpointConfig: &network.EndpointSettings{Aliases: []string{victim}},
		}); err != nil {
			t.Fatal(err)
		}
		// Back, the worker finds each of its executions finished by another and gives way.
		natstest.WaitFor(t, time.Minute, func() error {
			logs := c.logs(w)
			if !strings.Contains(logs, "nats reconnected") {
				return errors.New("the worker has not reconnected")
			}
			for _, id := range inFlight {
				if !gaveWay(logs, id) {
					return fmt.Errorf("%s has not given up %s yet", victim, id)
				}
			}
			return nil
		})
		assertExactlyOnce(t, op, "cl-cut", ids, time.Second)
		for _, id := range inFlight {
			if st, err := op.client.Status(c.ctx, "cl-cut", id); err != nil || st.WorkerID == victim {
				t.Errorf("%s after the worker came back: %+v %v", id, st, err)
			}
		}
		// And it takes new work.
		more := c.submitMany(t, "cl-cut", "c2", 24)
		assertExactlyOnce(t, op, "cl-cut", append(ids, more...), time.Minute)
	})

	t.Run("a bot's emergency command is refused and an operator's halt works", func(t *testing.T) {
		op := c.operator.on(t)
		op.deploy(fmt.Sprintf(clusterWorkflow, "cl-roles", "10ms"))
		before := len(op.messages(contract.StreamEmergency, "flow.emergency.>"))
		code, out := c.publisher(t, "b1", "halt", "--reason", "a bot tries")
		if code != 7 || !strings.Contains(out, `Permissions Violation for Publish to "flow.emergency.global"`) {
			t.Errorf("bot halt: exit %d\n%s", code, out)
		}
		if after := len(op.messages(contract.StreamEmergency, "flow.emergency.>")); after != before {
			t.Errorf("the bot's command was stored: %d commands, %d before", after, before)
		}
		code, out = c.publisher(t, "operator", "halt", "--scope", "bot.b2", "--reason", "operator halt")
		if code != 0 || !strings.Contains(out, "halted in force on worker") {
			t.Fatalf("operator halt: exit %d, want 0 with the halt confirmed in force on the workers\n%s", code, out)
		}
		t.Cleanup(func() { op.command("bot.b2", "resume", "container test done") })
		code, out = c.publisher(t, "b2", "run", "cl-roles", "--bot", "b2", "--wait")
		if code != exitHaltedCode || !strings.Contains(out, "execution_halted") {
			t.Errorf("bot run --wait after the operator's halt: exit %d\n%s", code, out)
		}
		if code, out = c.publisher(t, "b1", "run", "cl-roles", "--bot", "b1", "--wait"); code != 0 {
			t.Errorf("another bot's run: exit %d\n%s", code, out)
		}
	})

	// Every worker worked with the worker role's permissions alone.
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, w := range c.workers {
		if logs := c.logs(w); strings.Contains(logs, "lacks a permission") {
			t.Errorf("the server refused worker %s an operation:\n%s", id, tail(logs, 40))
		}
	}
	t.Logf("container suite ran in %s", time.Since(started).Round(time.Millisecond))
}

// gaveWay reports whether a worker's logs show that it gave up execution id to
// another worker rather than finishing it: it found it taken over or finished,
// handed it back, or stopped it when the server no longer confirmed its hold.
func gaveWay(logs, id string) bool {
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, `"execution_id":"`+id+`"`) {
			continue
		}
		for _, msg := range []string{"another worker took over this execution", "another worker claimed this execution",
			"request already executed", "handing the request back", "this worker no longer holds the request"} {
			if strings.Contains(line, msg) {
				return true
			}
		}
	}
	return false
}
