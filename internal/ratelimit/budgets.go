package ratelimit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/flowguard/flowguard/internal/contract"
)

// Bounds of a budget's window.
const (
	MinWindow = time.Second
	MaxWindow = 24 * time.Hour
	// maxDefaultMargin caps the default margin, a twentieth of the window.
	maxDefaultMargin = time.Second
)

// ErrInvalidBudgets is matched by every error about a provider's budgets.
var ErrInvalidBudgets = errors.New("invalid rate limits")

// budget is a checked contract.Budget.
type budget struct {
	name   string
	limit  int64
	window time.Duration
	margin time.Duration
}

// compile checks a provider's budgets.
func compile(provider string, rl contract.RateLimits) ([]budget, error) {
	if err := contract.CheckID("provider", provider); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidBudgets, err)
	}
	out := make([]budget, 0, len(rl.Budgets))
	seen := map[string]bool{}
	for i, b := range rl.Budgets {
		where := fmt.Sprintf("provider %s, budget #%d", provider, i+1)
		if err := contract.CheckID("budget name", b.Name); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrInvalidBudgets, where, err)
		}
		where = fmt.Sprintf("provider %s, budget %s", provider, b.Name)
		if seen[b.Name] {
			return nil, fmt.Errorf("%w: %s: declared twice; give each budget its own name", ErrInvalidBudgets, where)
		}
		seen[b.Name] = true
		if b.Limit < 1 {
			return nil, fmt.Errorf("%w: %s: limit must be at least 1, got %d", ErrInvalidBudgets, where, b.Limit)
		}
		window, err := time.ParseDuration(b.Window)
		if err != nil || window < MinWindow || window > MaxWindow || window%time.Millisecond != 0 {
			return nil, fmt.Errorf("%w: %s: window %q must be a duration from %s to %s, such as \"1m\"", ErrInvalidBudgets, where, b.Window, MinWindow, MaxWindow)
		}
		margin := min(window/20, maxDefaultMargin)
		if b.Margin != "" {
			if margin, err = time.ParseDuration(b.Margin); err != nil || margin < 0 || margin > window/2 {
				return nil, fmt.Errorf("%w: %s: margin %q must be a duration from 0 to half the window (%s)", ErrInvalidBudgets, where, b.Margin, window/2)
			}
		}
		out = append(out, budget{name: b.Name, limit: b.Limit, window: window, margin: margin})
	}
	return out, nil
}

// Parse reads rate limits by provider, as in a --rate-limits file:
//
//	{"binance": {"budgets": [
//	  {"name": "weight", "limit": 1200, "window": "1m"},
//	  {"name": "orders", "limit": 50, "window": "10s"}]}}
func Parse(data []byte) (map[string]contract.RateLimits, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m map[string]contract.RateLimits
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v; write {\"<provider>\": {\"budgets\": [{\"name\": \"weight\", \"limit\": 1200, \"window\": \"1m\"}]}}", ErrInvalidBudgets, err)
	}
	for provider, rl := range m {
		if _, err := compile(provider, rl); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Load reads and checks a --rate-limits file.
func Load(path string) (map[string]contract.RateLimits, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read rate limits: %w", err)
	}
	m, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("rate limits file %s: %w", path, err)
	}
	return m, nil
}

// Check checks one provider's budgets, as the workers will.
func Check(provider string, rl contract.RateLimits) error {
	_, err := compile(provider, rl)
	return err
}

// Usage is the weight used in the current window of a budget, over the fleet.
type Usage struct {
	Budget contract.Budget `json:"budget"`
	Used   int64           `json:"used"`
	// WindowEnd is when the current window ends.
	WindowEnd time.Time `json:"window_end"`
}

// CounterSubject returns the counter of the window of b that holds now, and its end.
func CounterSubject(s contract.Subjects, provider string, b contract.Budget, now time.Time) (string, time.Time, error) {
	window, err := time.ParseDuration(b.Window)
	if err != nil || window < MinWindow || window%time.Millisecond != 0 {
		return "", time.Time{}, fmt.Errorf("%w: provider %s, budget %s: window %q", ErrInvalidBudgets, provider, b.Name, b.Window)
	}
	index := windowIndex(now, window)
	return s.RateLimit(provider, b.Name, window, index), time.UnixMilli((index + 1) * window.Milliseconds()), nil
}
