package contract

// StreamSchedules holds schedules (<prefix>.schedules.<name>, the last message per
// subject: JetStream fires it, allow_msg_schedules) and their firings
// (<prefix>.fired.<workflow_id>.<name>, a work queue whose firings workers run as
// execution requests). A stream of its own, since message schedules need roll-ups, which
// FLOW_EXEC must not allow.
const StreamSchedules = "FLOW_SCHEDULES"

// DurableSchedules is the consumer through which workers take firings.
const DurableSchedules = "flowguard-schedules"

// Headers of schedules. The Nats-Schedule* headers are JetStream's; a paused
// schedule keeps its pattern and time zone under the Flowguard-Paused-* names,
// which JetStream does not fire.
const (
	HeaderSchedule         = "Nats-Schedule"
	HeaderScheduleTarget   = "Nats-Schedule-Target"
	HeaderScheduleTimeZone = "Nats-Schedule-Time-Zone"
	HeaderScheduleNext     = "Nats-Schedule-Next"
	HeaderRollup           = "Nats-Rollup"
	HeaderPausedSchedule   = "Flowguard-Paused-Schedule"
	HeaderPausedTimeZone   = "Flowguard-Paused-Time-Zone"
	HeaderPausedBy         = "Flowguard-Paused-By"
)

// MaxScheduleName is the longest schedule name: the request id of a firing is the
// name and the firing's time, within 64 characters.
const MaxScheduleName = 40

// Schedule is the subject of a schedule.
func (s Subjects) Schedule(name string) string { return s.Prefix + ".schedules." + name }

// SchedulesAll matches every schedule.
func (s Subjects) SchedulesAll() string { return s.Prefix + ".schedules.>" }

// Fired is the subject a schedule's firings are stored on.
func (s Subjects) Fired(workflowID, name string) string {
	return s.Prefix + ".fired." + workflowID + "." + name
}

// FiredAll matches every firing.
func (s Subjects) FiredAll() string { return s.Prefix + ".fired.>" }
