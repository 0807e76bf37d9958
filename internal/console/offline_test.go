package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/flowguard/flowguard/internal/natstest"
)

func TestPagesSayWhenNATSIsLost(t *testing.T) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv.URL())
	s, err := New(nc, "", Config{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	sub := s.hub.subscribe([]string{topicExecution + "e1"})
	get := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/fleet", nil)
		r.Header.Set("X-Partial", "1")
		s.Handler().ServeHTTP(rec, r)
		return rec
	}
	if off := get().Header().Get("X-Flowguard-Offline"); off != "" {
		t.Fatalf("connected, yet offline: %s", off)
	}
	srv.Shutdown()
	natstest.WaitFor(t, 10*time.Second, func() error {
		if off := get().Header().Get("X-Flowguard-Offline"); !strings.Contains(off, "lost its NATS connection") {
			return fmt.Errorf("offline header %q", off)
		}
		return nil
	})
	// Every page reloads, including one that follows a single execution.
	natstest.WaitFor(t, 10*time.Second, func() error {
		s.hub.flush()
		if got := s.hub.changes(sub); len(got) != 1 {
			return errors.New("a page of one execution was not told to reload")
		}
		return nil
	})
}
