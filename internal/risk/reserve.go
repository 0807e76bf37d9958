package risk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/schemas"
)

// DefaultReservationTTL is how long an order's reserved exposure counts when no
// metrics update of its bot settles it.
const DefaultReservationTTL = time.Minute

// maxReserveAttempts bounds the compare-and-set rounds of one reservation against
// the other workers' orders of the same bot.
const maxReserveAttempts = 50

// ErrReserve is matched by the error returned when an order's exposure could not
// be reserved (flow_risk unreachable, or too many orders of the bot at once on
// other workers). It is transient: the order is checked again.
var ErrReserve = errors.New("the order's exposure could not be reserved in " + contract.BucketRisk + "; it will be checked again")

// reserve checks an order against the limits with every live reservation of its
// bot counted, and when allowed says yes, records its own reservation with
// compare-and-set on reservations.<bot_id>: orders racing on several workers
// cannot together pass a limit that each would pass alone. Orders of one bot are
// serialised within the worker, so that the compare-and-set races only other
// workers. An order already reserved (a retried node) passes without a second
// reservation.
func (r *Risk) reserve(ctx context.Context, o *contract.OrderIntent, allowed func(held []contract.Reservation) bool) error {
	unlock := r.lockBot(o.BotID)
	defer unlock()
	key := contract.RiskReservationsKey(o.BotID)
	for range maxReserveAttempts {
		var held contract.Reservations
		var rev uint64
		e, err := r.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("%w: read %s: %v", ErrReserve, key, err)
		default:
			err := schemas.ValidateJSON(schemas.RiskReservations, e.Value())
			if err == nil {
				err = json.Unmarshal(e.Value(), &held)
			}
			if err != nil {
				return fmt.Errorf("%w: decode %s: %v; delete the key (nats kv del %s %s) to reset it", ErrReserve, key, err, contract.BucketRisk, key)
			}
			rev = e.Revision()
		}
		if slices.ContainsFunc(held.Orders, func(h contract.Reservation) bool { return h.ClientOrderID == o.ClientOrderID }) {
			return nil
		}
		held.BotID, held.Orders = o.BotID, r.live(o.BotID, held.Orders)
		if !allowed(held.Orders) {
			return nil
		}
		held.Orders = append(held.Orders, contract.Reservation{
			ClientOrderID: o.ClientOrderID, Symbol: o.Symbol, Side: o.Side, Quantity: o.Quantity, Price: o.Price(), At: r.now().UTC(),
		})
		data, err := json.Marshal(held)
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = r.kv.Create(ctx, key, data)
		} else {
			_, err = r.kv.Update(ctx, key, data, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("%w: write %s: %v", ErrReserve, key, err)
		}
	}
	return fmt.Errorf("%w: %s changed %d times while this order was checked", ErrReserve, key, maxReserveAttempts)
}

// Release removes an order's reservation once its outcome is known and it was
// not placed (an exchange refused the call): its exposure no longer counts.
// Releasing an order that holds no reservation does nothing.
func (r *Risk) Release(ctx context.Context, botID, clientOrderID string) error {
	unlock := r.lockBot(botID)
	defer unlock()
	key := contract.RiskReservationsKey(botID)
	for range maxReserveAttempts {
		e, err := r.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", key, err)
		}
		var held contract.Reservations
		if err := json.Unmarshal(e.Value(), &held); err != nil {
			return fmt.Errorf("decode %s: %w", key, err)
		}
		n := len(held.Orders)
		held.Orders = slices.DeleteFunc(held.Orders, func(h contract.Reservation) bool { return h.ClientOrderID == clientOrderID })
		if len(held.Orders) == n {
			return nil
		}
		data, err := json.Marshal(held)
		if err != nil {
			return err
		}
		if _, err = r.kv.Update(ctx, key, data, e.Revision()); err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("write %s: %w", key, err)
		}
	}
	return fmt.Errorf("release %s in %s: it changed %d times meanwhile; the reservation lapses after its TTL", clientOrderID, key, maxReserveAttempts)
}

// live drops the reservations that no longer count: settled, because the bot's
// metrics were updated after the order was reserved (its fill is reported there),
// or expired after the reservation TTL.
func (r *Risk) live(bot string, held []contract.Reservation) []contract.Reservation {
	r.mu.Lock()
	var updated time.Time
	if entry, ok := r.metrics[bot]; ok {
		updated = entry.m.UpdatedAt
	}
	r.mu.Unlock()
	now := r.now()
	return slices.DeleteFunc(held, func(h contract.Reservation) bool {
		return h.At.Before(updated) || now.Sub(h.At) > r.cfg.ReservationTTL
	})
}

// withReservations returns m with the reserved orders' effects on its positions.
func withReservations(m *contract.RiskMetrics, held []contract.Reservation) *contract.RiskMetrics {
	for _, h := range held {
		m = withOrder(m, &contract.OrderIntent{Symbol: h.Symbol, Side: h.Side, Quantity: h.Quantity, ReferencePrice: h.Price})
	}
	return m
}

// lockBot serialises the reservations of one bot within this worker.
func (r *Risk) lockBot(bot string) (unlock func()) {
	v, _ := r.botLocks.LoadOrStore(bot, &sync.Mutex{})
	mu := v.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}
