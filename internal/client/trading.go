package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/emergency"
	"github.com/flowguard/flowguard/internal/provision"
	"github.com/flowguard/flowguard/internal/risk"
	"github.com/flowguard/flowguard/schemas"
)

// Command is an emergency command as stored, with where and when.
type Command struct {
	contract.EmergencyCommand
	Scope string
	// Auto marks a worker's automatic halt, applied as a halt whatever its action.
	Auto   bool
	Seq    uint64
	Stored time.Time
}

// Emergency publishes an emergency command for scope. Every command is kept: the
// last one per scope is its state, the rest the audit trail.
func (c *Client) Emergency(ctx context.Context, scope string, cmd contract.EmergencyCommand) (uint64, error) {
	if err := emergency.CheckScope(scope); err != nil {
		return 0, err
	}
	if cmd.IssuedAt.IsZero() {
		cmd.IssuedAt = time.Now().UTC()
	}
	data, err := json.Marshal(cmd)
	if err != nil {
		return 0, err
	}
	if err := schemas.ValidateJSON(schemas.EmergencyCommand, data); err != nil {
		return 0, fmt.Errorf("emergency command %w", err)
	}
	msg := nats.NewMsg(c.subjects.Emergency(scope))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, NewRequestID())
	ack, err := c.js.PublishMsg(ctx, msg)
	if err != nil {
		return 0, c.publishError(err)
	}
	return ack.Sequence, nil
}

// InitEmergency recreates a deleted emergency stream (cfg sizes it as the workers'
// provisioning would) and stores a global halt in it: the halts it held are lost,
// so trading stays stopped until someone checks and resumes.
func (c *Client) InitEmergency(ctx context.Context, cfg provision.Config, issuedBy, reason string) error {
	cfg.Subjects = c.subjects
	if err := provision.CreateEmergency(ctx, c.js, cfg); err != nil {
		return err
	}
	_, err := c.Emergency(ctx, emergency.ScopeGlobal, contract.EmergencyCommand{
		Action: emergency.ActionHalt, IssuedBy: issuedBy,
		Reason: "emergency stream recreated, earlier halts unknown: " + reason,
	})
	return err
}

// History returns the emergency commands, oldest first; scope filters when not
// empty. A command on an automatic halt subject is listed as a halt.
func (c *Client) History(ctx context.Context, scope string) ([]Command, error) {
	if scope != "" {
		if err := emergency.CheckScope(scope); err != nil {
			return nil, err
		}
	}
	var out []Command
	err := c.readAll(ctx, contract.StreamEmergency, c.subjects.EmergencyAll(), func(m jetstream.Msg, meta *jetstream.MsgMetadata) {
		cmd := Command{EmergencyCommand: emergency.DecodeCommand(m.Data()), Seq: meta.Sequence.Stream, Stored: meta.Timestamp}
		cmd.Scope, cmd.Auto = emergency.SubjectScope(strings.TrimPrefix(m.Subject(), c.subjects.Emergency("")))
		if cmd.Auto {
			cmd.Action = emergency.ActionHalt
		}
		if scope == "" || cmd.Scope == scope {
			out = append(out, cmd)
		}
	})
	return out, err
}

// Board returns the state of every scope that received a command, computed as the
// workers compute it: a recreated emergency stream starts with a global halt.
func (c *Client) Board(ctx context.Context) (emergency.Board, error) {
	b := emergency.Board{}
	stream, err := c.js.Stream(ctx, contract.StreamEmergency)
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", contract.StreamEmergency, err)
	}
	recreated, err := emergency.Recreated(ctx, c.js, stream)
	if err != nil {
		return nil, err
	}
	if recreated {
		b.SeedRecreated()
	}
	err = c.readAll(ctx, contract.StreamEmergency, c.subjects.EmergencyAll(), func(m jetstream.Msg, meta *jetstream.MsgMetadata) {
		b.ApplyMessage(strings.TrimPrefix(m.Subject(), c.subjects.Emergency("")), m.Data(), meta.Sequence.Stream)
	})
	return b, err
}

// SetLimit adds or replaces (by id) a risk limit of scope: global, bot.<id> or
// strategy.<id>.
func (c *Client) SetLimit(ctx context.Context, scope string, l contract.RiskLimit) error {
	if err := risk.CheckLimitScope(scope); err != nil {
		return err
	}
	return c.editLimits(ctx, scope, func(ls []contract.RiskLimit) []contract.RiskLimit {
		for i := range ls {
			if ls[i].ID == l.ID {
				ls[i] = l
				return ls
			}
		}
		return append(ls, l)
	})
}

// RemoveLimit removes a risk limit of scope by id.
func (c *Client) RemoveLimit(ctx context.Context, scope, id string) error {
	found := false
	err := c.editLimits(ctx, scope, func(ls []contract.RiskLimit) []contract.RiskLimit {
		out := ls[:0]
		for _, l := range ls {
			if l.ID == id {
				found = true
				continue
			}
			out = append(out, l)
		}
		return out
	})
	if err == nil && !found {
		return fmt.Errorf("scope %s has no limit %s", scope, id)
	}
	return err
}

// editLimits changes a scope's limits with compare-and-set.
func (c *Client) editLimits(ctx context.Context, scope string, edit func([]contract.RiskLimit) []contract.RiskLimit) error {
	if err := emergency.CheckScope(scope); err != nil {
		return err
	}
	kv, err := c.riskKV(ctx)
	if err != nil {
		return err
	}
	key := contract.RiskLimitsKey(scope)
	for range 10 {
		var doc contract.RiskLimits
		var rev uint64
		e, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			if err := json.Unmarshal(e.Value(), &doc); err != nil {
				return fmt.Errorf("decode %s: %w", key, err)
			}
			rev = e.Revision()
		}
		doc.Limits = edit(doc.Limits)
		if _, err := risk.CompileLimits(doc.Limits); err != nil {
			return err
		}
		data, err := json.Marshal(doc)
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = kv.Create(ctx, key, data)
		} else {
			_, err = kv.Update(ctx, key, data, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return err
		}
	}
	return fmt.Errorf("limits of %s changed concurrently too often; try again", scope)
}

// ReportMetrics applies an update to a bot's risk metrics.
func (c *Client) ReportMetrics(ctx context.Context, botID string, u contract.RiskUpdate, day risk.TradingDay) (*contract.RiskMetrics, error) {
	if err := contract.CheckID("bot", botID); err != nil {
		return nil, err
	}
	kv, err := c.riskKV(ctx)
	if err != nil {
		return nil, err
	}
	return risk.UpdateMetrics(ctx, kv, botID, u, day, time.Now())
}

// RiskState is every scope's limits and every bot's metrics.
type RiskState struct {
	Limits  map[string][]contract.RiskLimit
	Metrics map[string]*contract.RiskMetrics
}

// Risk reads every limit and metrics document.
func (c *Client) Risk(ctx context.Context) (*RiskState, error) {
	kv, err := c.riskKV(ctx)
	if err != nil {
		return nil, err
	}
	st := &RiskState{Limits: map[string][]contract.RiskLimit{}, Metrics: map[string]*contract.RiskMetrics{}}
	keys, err := kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	sort.Strings(keys)
	for _, key := range keys {
		e, err := kv.Get(ctx, key)
		if err != nil {
			return nil, err
		}
		kind, name, _ := strings.Cut(key, ".")
		switch kind {
		case "limits":
			var doc contract.RiskLimits
			if err := json.Unmarshal(e.Value(), &doc); err != nil {
				return nil, fmt.Errorf("decode %s: %w", key, err)
			}
			st.Limits[name] = doc.Limits
		case "metrics":
			var m contract.RiskMetrics
			if err := json.Unmarshal(e.Value(), &m); err != nil {
				return nil, fmt.Errorf("decode %s: %w", key, err)
			}
			st.Metrics[name] = &m
		}
	}
	return st, nil
}

// FollowOrders calls fn with each order intent (of botID, or every bot when empty)
// until fn returns true or ctx ends. With replay it starts from the oldest.
func (c *Client) FollowOrders(ctx context.Context, botID string, replay bool, fn func(*contract.OrderIntent, uint64) bool) error {
	filter := c.subjects.OrdersAll()
	if botID != "" {
		filter = c.subjects.Orders(botID)
	}
	return c.follow(ctx, contract.StreamOrders, filter, replay, func(m jetstream.Msg, meta *jetstream.MsgMetadata) bool {
		var o contract.OrderIntent
		if json.Unmarshal(m.Data(), &o) != nil {
			return false
		}
		return fn(&o, meta.Sequence.Stream)
	})
}

func (c *Client) riskKV(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := c.js.KeyValue(ctx, contract.BucketRisk)
	if err != nil {
		return nil, notProvisioned(err)
	}
	return kv, nil
}
