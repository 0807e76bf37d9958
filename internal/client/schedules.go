package client

import "github.com/flowguard/flowguard/internal/schedule"

// Schedules returns the deployment's schedules, in stream FLOW_SCHEDULES.
func (c *Client) Schedules() *schedule.Book { return schedule.New(c.js, c.subjects) }
