package nodes

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Template is text with placeholders, used for URLs, subjects, query parameters,
// headers and the strings of JSON bodies:
//
//   - ${expression} is the value of an expression over inputs, nodes and execution
//     (see CompileExpression), for example ${inputs.symbol};
//   - ${env:NAME} is the value of a secret the worker shares (see Secrets);
//   - $${ is a literal ${.
//
// A template that is exactly one placeholder keeps the value's type, so that
// "${inputs.qty}" is a number in a JSON body; otherwise values are written as text
// (numbers in their shortest form, objects and arrays as JSON). An expression may
// hold braces and quoted strings; its placeholder ends at the matching "}".
type Template struct {
	source string
	parts  []templatePart
}

type templatePart struct {
	text   string
	expr   *Expression
	secret string // variable name of ${env:NAME}
}

func (p templatePart) placeholder() bool { return p.expr != nil || p.secret != "" }

// compileTemplate parses and compiles a template.
func compileTemplate(src string) (*Template, error) {
	t := &Template{source: src}
	var text strings.Builder
	flush := func() {
		if text.Len() > 0 {
			t.parts = append(t.parts, templatePart{text: text.String()})
			text.Reset()
		}
	}
	for i := 0; i < len(src); {
		switch {
		case strings.HasPrefix(src[i:], "$${"):
			text.WriteString("${")
			i += 3
		case strings.HasPrefix(src[i:], "${"):
			end, err := placeholderEnd(src, i+2)
			if err != nil {
				return nil, err
			}
			inner := strings.TrimSpace(src[i+2 : end])
			part, err := compilePlaceholder(inner)
			if err != nil {
				return nil, err
			}
			flush()
			t.parts = append(t.parts, part)
			i = end + 1
		default:
			text.WriteByte(src[i])
			i++
		}
	}
	flush()
	return t, nil
}

// placeholderEnd returns the index of the "}" closing a placeholder whose content
// starts at start, skipping nested braces and quoted strings.
func placeholderEnd(src string, start int) (int, error) {
	depth := 1
	for i := start; i < len(src); i++ {
		switch c := src[i]; c {
		case '"', '\'', '`':
			for i++; i < len(src) && src[i] != c; i++ {
				if src[i] == '\\' && c != '`' {
					i++
				}
			}
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return i, nil
			}
		}
	}
	return 0, fmt.Errorf("placeholder at %q is not closed with }", src[start-2:])
}

func compilePlaceholder(inner string) (templatePart, error) {
	if name, ok := strings.CutPrefix(inner, "env:"); ok {
		if !secretNamePattern.MatchString(name) {
			return templatePart{}, fmt.Errorf("${env:%s}: %q is not an environment variable name", name, name)
		}
		return templatePart{secret: name}, nil
	}
	e, err := CompileExpression(inner)
	if err != nil {
		return templatePart{}, fmt.Errorf("${%s}: %v", inner, err)
	}
	return templatePart{expr: e}, nil
}

// literal reports whether the template has no placeholder.
func (t *Template) literal() bool {
	return !slices.ContainsFunc(t.parts, templatePart.placeholder)
}

// firstPlaceholder returns the byte offset of the first placeholder, or -1.
func (t *Template) firstPlaceholder() int {
	return strings.Index(strings.ReplaceAll(t.source, "$${", "   "), "${")
}

// value renders the template; a single placeholder keeps its value's type.
func (t *Template) value(env *Env, secrets *Secrets) (any, error) {
	if len(t.parts) == 1 && t.parts[0].placeholder() {
		return t.parts[0].value(env, secrets)
	}
	return t.text(env, secrets)
}

// text renders the template as text.
func (t *Template) text(env *Env, secrets *Secrets) (string, error) {
	var b strings.Builder
	for _, p := range t.parts {
		if !p.placeholder() {
			b.WriteString(p.text)
			continue
		}
		v, err := p.value(env, secrets)
		if err != nil {
			return "", err
		}
		s, err := formatText(v)
		if err != nil {
			return "", Permanent(KindExpression, fmt.Errorf("template %q: %v", t.source, err))
		}
		b.WriteString(s)
	}
	return b.String(), nil
}

func (p templatePart) value(env *Env, secrets *Secrets) (any, error) {
	if p.secret != "" {
		return secrets.value(p.secret)
	}
	return p.expr.Eval(env)
}

// formatText writes a value as text.
func formatText(v any) (string, error) {
	switch t := v.(type) {
	case nil:
		return "", fmt.Errorf("a placeholder is null: check that the inputs or node outputs it reads exist")
	case string:
		return t, nil
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64), nil
	case float32:
		return strconv.FormatFloat(float64(t), 'f', -1, 32), nil
	case int:
		return strconv.Itoa(t), nil
	case int64:
		return strconv.FormatInt(t, 10), nil
	case bool:
		return strconv.FormatBool(t), nil
	}
	data, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("cannot write %T as text: %v", v, err)
	}
	return string(data), nil
}

// jsonTemplate is a JSON value whose strings are templates.
type jsonTemplate struct{ tree any }

// compileJSON compiles a JSON value; an absent or null value renders to nil.
func compileJSON(raw json.RawMessage) (*jsonTemplate, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	tree, err := compileTree(v, "")
	if err != nil {
		return nil, err
	}
	return &jsonTemplate{tree: tree}, nil
}

func compileTree(v any, path string) (any, error) {
	switch t := v.(type) {
	case string:
		tpl, err := compileTemplate(t)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", strings.TrimPrefix(path, "."), err)
		}
		if tpl.literal() {
			return tpl.text(nil, nil) // unescapes $${
		}
		return tpl, nil
	case map[string]any:
		out := make(map[string]any, len(t))
		for _, k := range slices.Sorted(maps.Keys(t)) {
			c, err := compileTree(t[k], path+"."+k)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			c, err := compileTree(e, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	}
	return v, nil
}

// render returns the JSON value with its templates rendered.
func (j *jsonTemplate) render(env *Env, secrets *Secrets) (any, error) {
	return renderTree(j.tree, env, secrets)
}

func renderTree(v any, env *Env, secrets *Secrets) (any, error) {
	switch t := v.(type) {
	case *Template:
		return t.value(env, secrets)
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			r, err := renderTree(e, env, secrets)
			if err != nil {
				return nil, err
			}
			out[k] = r
		}
		return out, nil
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			r, err := renderTree(e, env, secrets)
			if err != nil {
				return nil, err
			}
			out[i] = r
		}
		return out, nil
	}
	return v, nil
}

// namedTemplates are templates by name (query parameters, headers), in name order.
type namedTemplates struct {
	names     []string
	templates []*Template
}

func compileNamed(m map[string]string, field string) (namedTemplates, error) {
	var n namedTemplates
	for _, name := range slices.Sorted(maps.Keys(m)) {
		t, err := compileTemplate(m[name])
		if err != nil {
			return n, fmt.Errorf("config.%s.%s: %v", field, name, err)
		}
		n.names = append(n.names, name)
		n.templates = append(n.templates, t)
	}
	return n, nil
}

// outputs are the expressions that pick a node's outputs from an answer.
type outputs struct {
	names []string
	exprs []*Expression
}

// compileOutputs compiles output expressions against env, the answer's variables.
func compileOutputs(m map[string]string, env any) (outputs, error) {
	var o outputs
	for _, name := range slices.Sorted(maps.Keys(m)) {
		e, err := compileIn(env, m[name])
		if err != nil {
			return o, fmt.Errorf("config.outputs.%s: %v", name, err)
		}
		o.names = append(o.names, name)
		o.exprs = append(o.exprs, e)
	}
	return o, nil
}

// pick evaluates the output expressions over an answer.
func (o outputs) pick(answer any) (map[string]any, error) {
	out := make(map[string]any, len(o.names))
	for i, e := range o.exprs {
		v, err := e.eval(answer)
		if err != nil {
			return nil, Permanent(KindBadResponse, fmt.Errorf("output %s: %v", o.names[i], err))
		}
		out[o.names[i]] = v
	}
	return out, nil
}
