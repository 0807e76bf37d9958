// Package schemas holds the JSON Schemas of every flowguard message and KV value.
// The worker and the publisher validate against them at run time.
package schemas

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// FS holds the *.schema.json files.
//
//go:embed *.schema.json
var FS embed.FS

// Names of the schemas, without the .schema.json suffix.
const (
	ExecutionRequest = "execution-request"
	Workflow         = "workflow"
	Event            = "event"
	EmergencyCommand = "emergency-command"
	DeadLetter       = "dead-letter"
	Status           = "status"
	Result           = "result"
	Checkpoint       = "checkpoint"
	OrderIntent      = "order-intent"
	OrderMark        = "order-mark"
	RiskLimits       = "risk-limits"
	RiskMetrics      = "risk-metrics"
	RiskReservations = "risk-reservations"
	BreakerState     = "breaker-state"
	BreakerOverride  = "breaker-override"
	RateLimits       = "rate-limits"
	ProviderPause    = "provider-pause"
)

const baseURL = "https://flowguard.dev/schemas/"

var compiled = sync.OnceValues(compileAll)

func compileAll() (map[string]*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	files, err := fs.Glob(FS, "*.schema.json")
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		data, err := FS.ReadFile(f)
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("schemas: parse %s: %w", f, err)
		}
		if err := c.AddResource(baseURL+f, doc); err != nil {
			return nil, fmt.Errorf("schemas: add %s: %w", f, err)
		}
	}
	out := make(map[string]*jsonschema.Schema, len(files))
	for _, f := range files {
		s, err := c.Compile(baseURL + f)
		if err != nil {
			return nil, fmt.Errorf("schemas: compile %s: %w", f, err)
		}
		out[strings.TrimSuffix(f, ".schema.json")] = s
	}
	return out, nil
}

// Validate checks a decoded JSON document (as encoding/json decodes it into an
// any, or with exact numbers as ValidateJSON does) against the named schema. The
// error lists every violation with its location in the document.
func Validate(name string, doc any) error {
	all, err := compiled()
	if err != nil {
		return err
	}
	s, ok := all[name]
	if !ok {
		return fmt.Errorf("schemas: no schema named %q", name)
	}
	if err := s.Validate(doc); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return fmt.Errorf("does not match the %s schema: %s", name, describe(ve))
		}
		return err
	}
	return nil
}

// ValidateJSON parses data and validates it against the named schema.
func ValidateJSON(name string, data []byte) error {
	doc, err := parseJSON(data)
	if err != nil {
		return err
	}
	return Validate(name, doc)
}

// parseJSON decodes one JSON value, keeping numbers exact, for Validate.
func parseJSON(data []byte) (any, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	return doc, nil
}

// describe flattens a validation error into "at /path: message" parts, leaves only.
func describe(ve *jsonschema.ValidationError) string {
	var parts []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			loc := "/" + strings.Join(e.InstanceLocation, "/")
			parts = append(parts, fmt.Sprintf("at %s: %s", loc, e.ErrorKind.LocalizedString(printer)))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	const maxParts = 5
	if len(parts) > maxParts {
		parts = append(parts[:maxParts], fmt.Sprintf("and %d more", len(parts)-maxParts))
	}
	return strings.Join(parts, "; ")
}

var printer = message.NewPrinter(language.English)
