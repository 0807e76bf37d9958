package main

import (
	"encoding/json"
	"fmt"

	"github.com/flowguard/flowguard/internal/contract"
)

type ordersCmd struct {
	Bot    string `help:"Only this bot's orders."`
	Replay bool   `help:"Start from the oldest stored order instead of new ones."`
	JSON   bool   `help:"Print intents as JSON lines."`
}

func (c *ordersCmd) Run(e *env) error {
	err := e.client.FollowOrders(e.ctx, c.Bot, c.Replay, func(o *contract.OrderIntent, seq uint64) bool {
		if c.JSON {
			data, _ := json.Marshal(o)
			fmt.Fprintln(e.out, string(data))
			return false
		}
		price := "market"
		if o.LimitPrice > 0 {
			price = fmt.Sprintf("limit %g", o.LimitPrice)
		}
		reduce := ""
		if o.ReduceOnly {
			reduce = " reduce-only"
		}
		fmt.Fprintf(e.out, "%s  #%d  bot=%s %s %g %s %s%s  client_order_id=%s correlation_id=%s\n",
			o.CreatedAt.Local().Format("15:04:05.000"), seq, o.BotID, o.Side, o.Quantity, o.Symbol, price, reduce, o.ClientOrderID, o.CorrelationID)
		return false
	})
	if e.ctx.Err() != nil {
		return nil
	}
	return err
}
