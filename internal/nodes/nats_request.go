package nodes

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/flowguard/flowguard/internal/contract"
	"github.com/flowguard/flowguard/internal/workflow"
)

// NATSRequest sends a request to a NATS subject and reads the reply, so that a
// provider can be a NATS service in any language (a micro service, say):
//
//	{"id": "quote", "type": "nats_request", "timeout": "500ms",
//	 "config": {
//	   "subject": "md.quote",
//	   "body": {"symbol": "${inputs.symbol}"},
//	   "outputs": {"bid": "body.bid", "ask": "body.ask"}}}
//
// subject, header values and the strings of body (any JSON value, sent as JSON;
// no body sends an empty payload) are templates (see Template). The reply's body
// (parsed when JSON, else text) and headers are the outputs body and headers, or,
// with config.outputs, expressions over body, headers, inputs, nodes and execution
// pick them. No responders is a transient failure (retried); a reply with a micro
// error header (Nats-Service-Error-Code) fails the node, transiently for codes of
// 500 and more. The provider defaults to the subject.
//
// The request is sent with the worker's credentials, so subjects that reach NATS's
// own APIs ($JS., $KV., $SYS., $SRV., $O. and any other $ subject, _INBOX.) and
// flowguard's (the worker's subject prefix: emergency commands, orders...) are
// refused: when the subject is written in the definition, at compile time; when it
// is rendered from placeholders, at run time.
type NATSRequest struct {
	// Conn makes the requests; nil registers the type to check definitions only.
	Conn    *nats.Conn
	Secrets *Secrets
	// Prefix is the subject prefix of the worker's own subjects, refused as
	// destinations; empty means contract.DefaultPrefix.
	Prefix string
}

type natsRequestConfig struct {
	Subject string `json:"subject"`
	callConfig
}

// natsAnswer is what the output expressions of a nats_request node see.
type natsAnswer struct {
	Inputs    map[string]any            `expr:"inputs"`
	Nodes     map[string]map[string]any `expr:"nodes"`
	Execution Execution                 `expr:"execution"`
	Headers   map[string]string         `expr:"headers"`
	Body      any                       `expr:"body"`
}

type natsRequestRunner struct {
	conn     *nats.Conn
	provider string
	prefix   string
	subject  *Template
	call
}

// Compile implements Type.
func (t NATSRequest) Compile(n workflow.Node) (Runner, error) {
	var cfg natsRequestConfig
	if err := decodeConfig(n.Config, &cfg); err != nil {
		return nil, err
	}
	if cfg.Subject == "" {
		return nil, fmt.Errorf("config.subject is required, for example \"md.quote\"")
	}
	r := &natsRequestRunner{conn: t.Conn, prefix: cmp.Or(t.Prefix, contract.DefaultPrefix)}
	var err error
	if r.subject, err = compileTemplate(cfg.Subject); err != nil {
		return nil, fmt.Errorf("config.subject: %v", err)
	}
	derived := ""
	if r.subject.literal() {
		if err := checkSubject(cfg.Subject, r.prefix); err != nil {
			return nil, fmt.Errorf("config.subject: %v", err)
		}
		derived = cfg.Subject
	} else if first, _, ok := strings.Cut(cfg.Subject[:r.subject.firstPlaceholder()], "."); ok {
		// The first token is written out: a reserved one is refused now.
		if err := checkDestination(cfg.Subject, first, r.prefix); err != nil {
			return nil, fmt.Errorf("config.subject: %v", err)
		}
	}
	if r.provider, err = providerName(n, derived, "config.subject"); err != nil {
		return nil, err
	}
	if r.call, err = compileCall(cfg.callConfig, t.Secrets, natsAnswer{}); err != nil {
		return nil, err
	}
	return r, nil
}

// checkSubject requires a subject a request can be sent to: tokens separated by
// dots, no wildcard, no white space, and not a subject of NATS's or the worker's
// own (see checkDestination).
func checkSubject(s, prefix string) error {
	tokens := strings.Split(s, ".")
	for _, tok := range tokens {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n") {
			return fmt.Errorf("subject %q is not one a request can be sent to: use dot-separated tokens without wildcards or spaces", s)
		}
	}
	return checkDestination(s, tokens[0], prefix)
}

// checkDestination refuses a subject whose first token is reserved: a $ subject
// (the JetStream, key-value, object store, system and service APIs), _INBOX (replies
// to other clients), or the worker's prefix (emergency commands, orders, requests).
// A workflow, which a bot may send inline, must not drive them with the worker's
// credentials.
func checkDestination(s, first, prefix string) error {
	if !strings.HasPrefix(first, "$") && first != "_INBOX" && first != prefix {
		return nil
	}
	return fmt.Errorf("subject %q is reserved: subjects under $ (such as $JS., $KV., $SYS., $SRV., $O.), _INBOX. and %s. reach the APIs of NATS and of flowguard itself, which a workflow may not call with the worker's credentials; send requests to your own service's subjects (for example md.quote), and use the publisher or a NATS client with its own credentials for flowguard's", s, prefix)
}

// Provider implements Provider.
func (r *natsRequestRunner) Provider() string { return r.provider }

// Run implements Runner; outputs and errors are redacted of secrets.
func (r *natsRequestRunner) Run(ctx context.Context, in Input) (Result, error) {
	out, err := r.run(ctx, in)
	if err != nil {
		return Result{}, r.secrets.redactError(err)
	}
	return Result{Outputs: r.secrets.redactOutputs(out)}, nil
}

func (r *natsRequestRunner) run(ctx context.Context, in Input) (map[string]any, error) {
	if r.conn == nil {
		return nil, Permanent(KindNode, errors.New("the nats_request node type was registered without a NATS connection; only a worker runs nats_request nodes"))
	}
	subject, err := r.subject.text(in.Env, r.secrets)
	if err != nil {
		return nil, err
	}
	if err := checkSubject(subject, r.prefix); err != nil {
		return nil, Permanent(KindInvalidCall, err)
	}
	msg := nats.NewMsg(subject)
	if msg.Data, err = r.renderBody(in.Env); err != nil {
		return nil, err
	}
	for i, name := range r.headers.names {
		v, err := r.headers.templates[i].text(in.Env, r.secrets)
		if err != nil {
			return nil, err
		}
		msg.Header.Set(name, v)
	}
	reply, err := r.conn.RequestMsgWithContext(ctx, msg)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return nil, fmt.Errorf("request to %s: stopped: %w", subject, ctx.Err())
	case errors.Is(err, nats.ErrNoResponders):
		return nil, Transient(KindNoResponders, fmt.Errorf("request to %s: no service listens on this subject; start the service, or check the subject", subject))
	case errors.Is(err, nats.ErrBadSubject), errors.Is(err, nats.ErrMaxPayload):
		return nil, Permanent(KindInvalidCall, fmt.Errorf("request to %s: %v", subject, err))
	default:
		return nil, Transient(KindConnection, fmt.Errorf("request to %s: %v", subject, err))
	}
	if len(reply.Data) > maxAnswerBytes {
		return nil, Permanent(KindBadResponse, fmt.Errorf("reply from %s is larger than %d bytes; ask the service for less", subject, maxAnswerBytes))
	}
	if err := serviceError(subject, reply); err != nil {
		return nil, err
	}
	body, err := parseBody(reply.Data, false)
	if err != nil {
		return nil, err
	}
	answer := natsAnswer{
		Inputs: in.Env.Inputs, Nodes: in.Env.Nodes, Execution: in.Env.Execution,
		Headers: flatHeaders(reply.Header), Body: body,
	}
	if len(r.outputs.names) == 0 {
		return map[string]any{"headers": answer.Headers, "body": answer.Body}, nil
	}
	return r.outputs.pick(answer)
}

// serviceError reads the error headers of a micro service's reply; nil when none.
func serviceError(subject string, reply *nats.Msg) error {
	codeText := reply.Header.Get(micro.ErrorCodeHeader)
	if codeText == "" {
		return nil
	}
	description := reply.Header.Get(micro.ErrorHeader)
	code, _ := strconv.Atoi(codeText)
	err := fmt.Errorf("request to %s: service error %s: %s", subject, codeText, description)
	if code >= 500 {
		return Transient(KindServiceError, err)
	}
	return Permanent(KindServiceError, err)
}
