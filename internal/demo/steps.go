package demo

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Step is one scenario's outcome.
type Step struct {
	Title    string
	OK       bool
	Expected string   // on failure: what should have come back
	Got      string   // on failure: what did
	Lines    []string // what was sent, what came back, the evidence
	Took     time.Duration
}

// stepError is a check that did not match.
type stepError struct{ expected, got string }

func (e *stepError) Error() string { return "expected " + e.expected + ", got " + e.got }

func mismatch(expected string, got string, args ...any) error {
	return &stepError{expected: expected, got: fmt.Sprintf(got, args...)}
}

// printer shows progress as it happens.
type printer struct {
	say  func(string, ...any)
	step *Step
}

// line prints one line of the current step and records it.
func (p *printer) line(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	p.step.Lines = append(p.step.Lines, s)
	p.say("      %s", s)
}

// runSteps runs each scenario in order, printing it as it goes; it stops at the first failure
// (later steps build on earlier ones).
func runSteps(ctx context.Context, say func(string, ...any), sc []scenario) ([]Step, error) {
	var out []Step
	for i, s := range sc {
		st := Step{Title: s.title}
		say("[%d/%d] %s", i+1, len(sc), s.title)
		start := time.Now()
		err := s.run(ctx, &printer{say: say, step: &st})
		st.Took = time.Since(start).Round(time.Millisecond)
		if err == nil {
			st.OK = true
			say("      ok (%s)", st.Took)
			out = append(out, st)
			continue
		}
		if ctx.Err() != nil {
			say("      interrupted")
			return out, fmt.Errorf("demo: interrupted during step %d: %w", i+1, ctx.Err())
		}
		var se *stepError
		if errors.As(err, &se) {
			st.Expected, st.Got = se.expected, se.got
		} else {
			st.Expected, st.Got = "the step to run", err.Error()
		}
		say("      FAILED (%s)\n      expected: %s\n      got:      %s", st.Took, st.Expected, indent(st.Got))
		out = append(out, st)
		return out, fmt.Errorf("demo: step %d (%s) failed: %w", i+1, s.title, err)
	}
	return out, nil
}

func indent(s string) string { return strings.ReplaceAll(s, "\n", "\n                ") }

// scenario is one step of the walk-through.
type scenario struct {
	title string
	run   func(ctx context.Context, p *printer) error
}
