// Package logging builds the root zerolog logger of a command: JSON lines by
// default, readable console output when the output is a terminal.
package logging

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// Options of the root logger, as flags.
type Options struct {
	Level  string `help:"Log level: debug, info, warn, error." default:"info" enum:"debug,info,warn,error" env:"FLOWGUARD_LOG_LEVEL" name:"log-level"`
	Format string `help:"Log format: auto (console on a terminal, else JSON), json, console." default:"auto" enum:"auto,json,console" env:"FLOWGUARD_LOG_FORMAT" name:"log-format"`
}

// New returns a logger writing to out. Its JSON time format is zerolog's global
// TimeFieldFormat, which the command's main sets.
func New(o Options, out *os.File) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(o.Level)
	if err != nil {
		return zerolog.Nop(), fmt.Errorf("log level %q: %w", o.Level, err)
	}
	var w io.Writer = out
	if o.Format == "console" || (o.Format == "auto" && isatty.IsTerminal(out.Fd())) {
		w = zerolog.ConsoleWriter{Out: out, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
}
