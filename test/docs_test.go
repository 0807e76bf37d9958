package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/flowguard/flowguard/internal/natstest"
	"github.com/flowguard/flowguard/internal/workflow"
	"github.com/flowguard/flowguard/schemas"
)

// The docs tests: the README and every page of docs/, as docs/README.md describes
// ("Docs that cannot drift").

// repoRoot is the repository, seen from this package's directory.
const repoRoot = ".."

// mdDoc is a Markdown file of the repository.
type mdDoc struct {
	path  string // relative to the repository
	lines []string
}

// fence is a fenced code block.
type fence struct {
	lang   string
	line   int    // of the opening fence, 1-based
	marker string // the HTML comment on the line before it, if any
	body   []string
}

func docs(t *testing.T) []mdDoc {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	paths = append([]string{filepath.Join(repoRoot, "README.md")}, paths...)
	var out []mdDoc
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(repoRoot, p)
		out = append(out, mdDoc{path: filepath.ToSlash(rel), lines: strings.Split(string(data), "\n")})
	}
	return out
}

var fenceLine = regexp.MustCompile("^ {0,3}```\\s*([A-Za-z0-9_-]*)\\s*$")

// fences returns the code blocks of d, and its other lines (code blocks blanked).
func (d mdDoc) fences() (blocks []fence, prose []string) {
	var cur *fence
	for i, l := range d.lines {
		m := fenceLine.FindStringSubmatch(l)
		switch {
		case cur == nil && m != nil:
			cur = &fence{lang: m[1], line: i + 1}
			if i > 0 && strings.HasPrefix(strings.TrimSpace(d.lines[i-1]), "<!--") {
				cur.marker = strings.TrimSpace(d.lines[i-1])
			}
			prose = append(prose, "")
		case cur != nil && m != nil && m[1] == "":
			blocks = append(blocks, *cur)
			cur = nil
			prose = append(prose, "")
		case cur != nil:
			cur.body = append(cur.body, l)
			prose = append(prose, "")
		default:
			prose = append(prose, l)
		}
	}
	return blocks, prose
}

var (
	codeSpan = regexp.MustCompile("`[^`]*`")
	mdLink   = regexp.MustCompile(`\[[^\]]*\]\(([^)\s]+)\)`)
	heading  = regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`)
)

// anchors returns the GitHub anchors of d's headings.
func (d mdDoc) anchors() map[string]bool {
	_, prose := d.fences()
	out := map[string]bool{}
	for _, l := range prose {
		m := heading.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		text := mdLink.ReplaceAllStringFunc(m[1], func(s string) string { return s[1:strings.Index(s, "](")] })
		var b strings.Builder
		for _, r := range strings.ToLower(text) {
			switch {
			case unicode.IsLetter(r), unicode.IsDigit(r), r == '-', r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteRune('-')
			}
		}
		a := b.String()
		for n := 1; out[a]; n++ {
			a = fmt.Sprintf("%s-%d", b.String(), n)
		}
		out[a] = true
	}
	return out
}

// TestDocsLinks: every link into the repository resolves, #anchors included, none
// leaves the repository, and docs/README.md links every page of docs/.
func TestDocsLinks(t *testing.T) {
	all := docs(t)
	byPath := map[string]mdDoc{}
	for _, d := range all {
		byPath[d.path] = d
	}
	indexed := map[string]bool{}
	for _, d := range all {
		_, prose := d.fences()
		for i, l := range prose {
			for _, m := range mdLink.FindAllStringSubmatch(codeSpan.ReplaceAllString(l, ""), -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				where := fmt.Sprintf("%s:%d: link %s", d.path, i+1, target)
				file, anchor, _ := strings.Cut(target, "#")
				resolved := d.path
				if file != "" {
					resolved = filepath.ToSlash(filepath.Clean(filepath.Join(filepath.Dir(d.path), file)))
				}
				if resolved == ".." || strings.HasPrefix(resolved, "../") {
					t.Errorf("%s leaves the repository", where)
					continue
				}
				if _, err := os.Stat(filepath.Join(repoRoot, resolved)); err != nil {
					t.Errorf("%s: %v", where, err)
					continue
				}
				if d.path == "docs/README.md" {
					indexed[resolved] = true
				}
				if anchor == "" || !strings.HasSuffix(resolved, ".md") {
					continue
				}
				doc, ok := byPath[resolved]
				if !ok {
					data, err := os.ReadFile(filepath.Join(repoRoot, resolved))
					if err != nil {
						t.Fatal(err)
					}
					doc = mdDoc{path: resolved, lines: strings.Split(string(data), "\n")}
				}
				if !doc.anchors()[anchor] {
					t.Errorf("%s: %s has no heading with anchor #%s", where, resolved, anchor)
				}
			}
		}
	}
	for _, d := range all {
		if strings.HasPrefix(d.path, "docs/") && d.path != "docs/README.md" && !indexed[d.path] {
			t.Errorf("docs/README.md does not link %s", d.path)
		}
	}
}

var schemaMarker = regexp.MustCompile(`^<!--\s*schema:\s*([a-z-]+)(\s+node)?\s*-->$`)

// TestDocsJSONFollowsTheSchemas: every JSON block names its schema and is valid
// against it; a workflow is checked as a deploy checks it.
func TestDocsJSONFollowsTheSchemas(t *testing.T) {
	n := 0
	for _, d := range docs(t) {
		blocks, _ := d.fences()
		for _, b := range blocks {
			if b.lang != "json" {
				continue
			}
			where := fmt.Sprintf("%s:%d", d.path, b.line)
			m := schemaMarker.FindStringSubmatch(b.marker)
			if m == nil {
				t.Errorf("%s: a JSON block needs <!-- schema: NAME --> on the line before it (see docs/README.md)", where)
				continue
			}
			name, node, data := m[1], m[2] != "", []byte(strings.Join(b.body, "\n"))
			if name == "none" {
				continue
			}
			n++
			if node {
				if name != schemas.Workflow {
					t.Errorf("%s: only workflow blocks may hold a node", where)
					continue
				}
				data = []byte(`{"id": "doc", "nodes": [` + string(data) + `]}`)
			}
			if err := schemas.ValidateJSON(name, data); err != nil {
				t.Errorf("%s: not a valid %s: %v", where, name, err)
				continue
			}
			if name == schemas.Workflow && !node {
				if _, err := workflow.Parse(data); err != nil {
					t.Errorf("%s: the workflow would not deploy: %v", where, err)
				}
			}
		}
	}
	if n == 0 {
		t.Error("no JSON block was validated")
	}
}

// exitsComment is a runnable command's announced exit code.
var exitsComment = regexp.MustCompile(`#\s*exits\s+(\d+)\b`)

// docCommand is a command of a runnable block.
type docCommand struct {
	where string
	args  []string // after "go run ./cmd/publisher"
	exit  int
}

// runnable returns the commands of every block marked <!-- run -->.
func runnable(t *testing.T) []docCommand {
	var out []docCommand
	for _, d := range docs(t) {
		blocks, _ := d.fences()
		for _, b := range blocks {
			if b.marker != "<!-- run -->" {
				continue
			}
			if b.lang != "sh" {
				t.Errorf("%s:%d: only sh blocks can be marked runnable", d.path, b.line)
				continue
			}
			for _, c := range b.commands() {
				line, where := c.text, fmt.Sprintf("%s:%d", d.path, c.line)
				cmd := docCommand{where: where}
				if m := exitsComment.FindStringSubmatch(line); m != nil {
					cmd.exit, _ = strconv.Atoi(m[1])
				}
				words, err := shellWords(line)
				if err != nil {
					t.Errorf("%s: %v", where, err)
					continue
				}
				if len(words) == 0 {
					continue
				}
				if len(words) < 3 || words[0] != "go" || words[1] != "run" || words[2] != "./cmd/publisher" {
					t.Errorf("%s: a runnable block may only hold go run ./cmd/publisher commands, not %q", where, line)
					continue
				}
				cmd.args = words[3:]
				out = append(out, cmd)
			}
		}
	}
	return out
}

// commandLine is a command of a shell block, continuation lines joined.
type commandLine struct {
	line int // in the file, 1-based
	text string
}

// commands joins the lines of a shell block into commands: a line ending with \
// goes on on the next, and so does a single-quoted string left open.
func (b fence) commands() []commandLine {
	var out []commandLine
	for i := 0; i < len(b.body); i++ {
		first, text := i, b.body[i]
		for i+1 < len(b.body) {
			if t := strings.TrimSpace(text); strings.HasSuffix(t, `\`) {
				text = strings.TrimSuffix(t, `\`) + " "
			} else if strings.Count(text, "'")%2 == 1 {
				text += "\n"
			} else {
				break
			}
			i++
			text += b.body[i]
		}
		out = append(out, commandLine{line: b.line + 1 + first, text: text})
	}
	return out
}

// shellWords splits a command line as sh does for the simple quoting the docs
// use: single and double quotes, backslash escapes, and # comments.
func shellWords(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '#' && !inWord:
			return words, nil
		case c == ' ' || c == '\t':
			if inWord {
				words, inWord = append(words, cur.String()), false
				cur.Reset()
			}
		case c == '\'' || c == '"':
			end := strings.IndexByte(line[i+1:], c)
			if end < 0 {
				return nil, errors.New("unbalanced quote")
			}
			cur.WriteString(line[i+1 : i+1+end])
			i += end + 1
			inWord = true
		case c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// TestDocsRunnableSnippets runs every command of the blocks marked <!-- run -->,
// in order, with the publisher binary against a worker with an embedded server.
func TestDocsRunnableSnippets(t *testing.T) {
	cmds := runnable(t)
	if len(cmds) == 0 {
		t.Fatal("no runnable block found")
	}
	_, publisherBin := binaries(t)
	h := newHarness(t)
	h.startWorker("docs", nil)
	for _, c := range cmds {
		var code int
		var out []byte
		// Emergency commands apply within milliseconds, not at once: a command
		// announced to exit with a code is tried again until it does.
		natstest.WaitFor(t, 20*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, publisherBin, c.args...)
			cmd.Dir = repoRoot
			cmd.Env = append(os.Environ(), "FLOWGUARD_NATS_URL="+h.srv.URL())
			var err error
			out, err = cmd.CombinedOutput()
			code = 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatalf("%s: %v", c.where, err)
			}
			if code != c.exit {
				return fmt.Errorf("%s: publisher %s exited %d, the docs say %d\n%s", c.where, strings.Join(c.args, " "), code, c.exit, out)
			}
			return nil
		})
		if slices.Contains(c.args, "--wait") && c.exit == 0 && !strings.Contains(string(out), "execution_completed") {
			t.Errorf("%s: no execution_completed in the output:\n%s", c.where, out)
		}
	}
}

// natsPayload says which schema the payload of a nats CLI command follows.
type natsPayload struct {
	pattern *regexp.Regexp // over "pub SUBJECT" or "kv put BUCKET KEY"
	schema  string
}

// natsPayloads are the nats CLI commands the docs may show with a JSON payload.
var natsPayloads = []natsPayload{
	{regexp.MustCompile(`^pub flow\.exec\.[A-Za-z0-9_-]+$`), schemas.ExecutionRequest},
	{regexp.MustCompile(`^pub flow\.emergency\.`), schemas.EmergencyCommand},
	{regexp.MustCompile(`^kv put flow_breakers override\.`), schemas.BreakerOverride},
	{regexp.MustCompile(`^kv put flow_risk limits\.`), schemas.RiskLimits},
	{regexp.MustCompile(`^kv put flow_risk metrics\.`), schemas.RiskMetrics},
	{regexp.MustCompile(`^kv put flow_workflows [A-Za-z0-9_-]+$`), schemas.Workflow},
}

// TestDocsNATSPayloads: the messages the docs publish with the nats CLI follow their
// schemas, and a request's Nats-Msg-Id is <workflow_id>.<request_id>.
func TestDocsNATSPayloads(t *testing.T) {
	n := 0
	for _, d := range docs(t) {
		blocks, _ := d.fences()
		for _, b := range blocks {
			if b.lang != "sh" {
				continue
			}
			for _, c := range b.commands() {
				words, err := shellWords(c.text)
				if err != nil || len(words) < 3 || words[0] != "nats" || (words[1] != "pub" && words[1] != "kv") {
					continue
				}
				where := fmt.Sprintf("%s:%d", d.path, c.line)
				var target, payload string
				var rest []string
				switch {
				case words[1] == "pub" && len(words) >= 4:
					target, payload, rest = "pub "+words[2], words[3], words[4:]
				case words[1] == "kv" && words[2] == "put" && len(words) >= 6:
					target, payload = "kv put "+words[3]+" "+words[4], words[5]
				default:
					continue
				}
				if strings.HasPrefix(payload, "$(") {
					continue // a file's content, tested where the file is
				}
				i := slices.IndexFunc(natsPayloads, func(p natsPayload) bool { return p.pattern.MatchString(target) })
				if i < 0 {
					t.Errorf("%s: nats %s: no schema is known for it; add it to natsPayloads", where, target)
					continue
				}
				n++
				schema := natsPayloads[i].schema
				if err := schemas.ValidateJSON(schema, []byte(payload)); err != nil {
					t.Errorf("%s: not a valid %s: %v", where, schema, err)
					continue
				}
				if schema != schemas.ExecutionRequest {
					continue
				}
				var req struct {
					RequestID  string `json:"request_id"`
					WorkflowID string `json:"workflow_id"`
				}
				if err := json.Unmarshal([]byte(payload), &req); err != nil {
					t.Fatal(err)
				}
				want := "Nats-Msg-Id:" + req.WorkflowID + "." + req.RequestID
				if req.RequestID != "" && !slices.Contains(rest, want) {
					t.Errorf("%s: a request with a request_id is published with -H %s (see docs/contract.md)", where, want)
				}
			}
		}
	}
	if n == 0 {
		t.Error("no nats CLI payload was checked")
	}
}
