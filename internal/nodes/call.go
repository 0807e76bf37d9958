package nodes

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/workflow"
)

// maxAnswerBytes bounds an answer's body: outputs go into events and KV, so pick
// the fields you need (config.outputs) from large answers.
const maxAnswerBytes = 1 << 20

// callConfig is the part of http and nats_request configs that builds the call and
// reads the answer.
type callConfig struct {
	Headers map[string]string `json:"headers,omitempty"`
	Body    json.RawMessage   `json:"body,omitempty"`
	Outputs map[string]string `json:"outputs,omitempty"`
}

// call is a compiled callConfig.
type call struct {
	headers namedTemplates
	body    *jsonTemplate // nil: no body
	outputs outputs       // empty: the default outputs of the node type
	secrets *Secrets
}

// compileCall compiles headers, body and outputs; answerEnv is the struct whose
// fields the output expressions may read.
func compileCall(cfg callConfig, secrets *Secrets, answerEnv any) (call, error) {
	c := call{secrets: secrets}
	var err error
	if c.headers, err = compileNamed(cfg.Headers, "headers"); err != nil {
		return c, err
	}
	if c.body, err = compileJSON(cfg.Body); err != nil {
		return c, fmt.Errorf("config.body: %v", err)
	}
	if c.outputs, err = compileOutputs(cfg.Outputs, answerEnv); err != nil {
		return c, err
	}
	return c, nil
}

// renderBody returns the JSON body of the call, nil when it has none.
func (c *call) renderBody(env *Env) ([]byte, error) {
	if c.body == nil {
		return nil, nil
	}
	v, err := c.body.render(env, c.secrets)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(v)
	if err != nil {
		return nil, Permanent(KindInvalidCall, fmt.Errorf("body cannot be written as JSON: %v", err))
	}
	return data, nil
}

// parseBody decodes an answer's body: JSON when it is JSON, else text. It is an
// error when the answer says it is JSON and is not.
func parseBody(data []byte, saysJSON bool) (any, error) {
	if len(data) == 0 {
		return nil, nil
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		if saysJSON {
			return nil, Permanent(KindBadResponse, fmt.Errorf("answer claims to be JSON but is not: %v", err))
		}
		return string(data), nil
	}
	return v, nil
}

// providerName returns the node's provider: its provider field, else derived (a
// URL's host, a subject) made into an identifier. what names the source of
// derived for errors, and derived is empty when it cannot be known before run time.
func providerName(n workflow.Node, derived, what string) (string, error) {
	if n.Provider != "" {
		if err := contract.CheckID("provider", n.Provider); err != nil {
			return "", fmt.Errorf("%v; the provider names its circuit breaker, its subject and its KV key", err)
		}
		return n.Provider, nil
	}
	if derived == "" {
		return "", fmt.Errorf("%s has placeholders, so the provider cannot be known before run time: set the node's provider field (for example \"provider\": \"binance\") to name its circuit breaker", what)
	}
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, derived)
	if len(name) > 64 {
		name = name[:64]
	}
	return name, nil
}

// flatHeaders turns multi-valued headers into one value per lowercase name, the
// values of a repeated header joined with ", ".
func flatHeaders(h map[string][]string) map[string]string {
	out := make(map[string]string, len(h))
	for k, vs := range h {
		out[strings.ToLower(k)] = strings.Join(vs, ", ")
	}
	return out
}
