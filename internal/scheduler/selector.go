package scheduler

import (
	"fmt"
	"slices"
	"strings"

	"github.com/devops-platform/devops"
)

// Selector matches worker labels. Its syntax is Kubernetes' label selector:
// requirements separated by commas, all of which must hold:
//
//	zone=a  zone==a  zone!=a  zone in (a,b)  zone notin (a,b)  zone  !zone
type Selector struct {
	reqs []requirement
	text string
}

type operator int

const (
	opEquals operator = iota
	opNotEquals
	opIn
	opNotIn
	opExists
	opNotExists
)

type requirement struct {
	key    string
	op     operator
	values []string
}

// ParseSelector reads a selector; the empty string matches every worker.
// Malformed input is an error wrapping devops.ErrInvalid.
func ParseSelector(text string) (Selector, error) {
	sel := Selector{text: strings.TrimSpace(text)}
	for _, part := range splitTopLevel(sel.text) {
		part = strings.TrimSpace(part)
		if part == "" {
			return Selector{}, fmt.Errorf("%w: selector %q: empty requirement", devops.ErrInvalid, text)
		}
		r, err := parseRequirement(part)
		if err != nil {
			return Selector{}, fmt.Errorf("%w: selector %q: %v", devops.ErrInvalid, text, err)
		}
		sel.reqs = append(sel.reqs, r)
	}
	return sel, nil
}

// splitTopLevel splits on commas outside parentheses.
func splitTopLevel(s string) []string {
	if s == "" {
		return nil
	}
	var parts []string
	depth, start := 0, 0
	for i, c := range s {
		switch c {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

func parseRequirement(s string) (requirement, error) {
	if strings.HasPrefix(s, "!") {
		key := strings.TrimSpace(s[1:])
		return requirement{key: key, op: opNotExists}, validKey(key)
	}
	if i := strings.Index(s, "!="); i >= 0 {
		return binary(s[:i], opNotEquals, s[i+2:])
	}
	if i := strings.Index(s, "=="); i >= 0 {
		return binary(s[:i], opEquals, s[i+2:])
	}
	if i := strings.Index(s, "="); i >= 0 {
		return binary(s[:i], opEquals, s[i+1:])
	}
	fields := strings.Fields(s)
	if len(fields) == 1 {
		return requirement{key: fields[0], op: opExists}, validKey(fields[0])
	}
	if len(fields) < 2 {
		return requirement{}, fmt.Errorf("cannot read %q", s)
	}
	key, rest := fields[0], strings.TrimSpace(strings.TrimPrefix(s, fields[0]))
	var op operator
	switch {
	case strings.HasPrefix(rest, "notin"):
		op, rest = opNotIn, strings.TrimSpace(rest[len("notin"):])
	case strings.HasPrefix(rest, "in"):
		op, rest = opIn, strings.TrimSpace(rest[len("in"):])
	default:
		return requirement{}, fmt.Errorf("cannot read %q: want =, !=, in, notin", s)
	}
	if !strings.HasPrefix(rest, "(") || !strings.HasSuffix(rest, ")") {
		return requirement{}, fmt.Errorf("%q: values must be in parentheses", s)
	}
	var values []string
	for _, v := range strings.Split(rest[1:len(rest)-1], ",") {
		v = strings.TrimSpace(v)
		if err := validValue(v); err != nil || v == "" {
			return requirement{}, fmt.Errorf("%q: bad value %q", s, v)
		}
		values = append(values, v)
	}
	return requirement{key: key, op: op, values: values}, validKey(key)
}

func binary(key string, op operator, value string) (requirement, error) {
	key, value = strings.TrimSpace(key), strings.TrimSpace(value)
	if err := validKey(key); err != nil {
		return requirement{}, err
	}
	if err := validValue(value); err != nil {
		return requirement{}, err
	}
	return requirement{key: key, op: op, values: []string{value}}, nil
}

// ValidateLabels checks label keys and values with the selector's rules.
func ValidateLabels(labels map[string]string) error {
	for k, v := range labels {
		if err := validKey(k); err != nil {
			return fmt.Errorf("%w: label %q: %v", devops.ErrInvalid, k, err)
		}
		if err := validValue(v); err != nil {
			return fmt.Errorf("%w: label %q: %v", devops.ErrInvalid, k, err)
		}
	}
	return nil
}

func validKey(k string) error {
	if k == "" {
		return fmt.Errorf("empty label key")
	}
	if len(k) > 63 {
		return fmt.Errorf("label key %q longer than 63 characters", k)
	}
	return validChars(k, "label key")
}

func validValue(v string) error {
	if len(v) > 63 {
		return fmt.Errorf("label value %q longer than 63 characters", v)
	}
	return validChars(v, "label value")
}

func validChars(s, what string) error {
	for _, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '/'
		if !ok {
			return fmt.Errorf("%s %q: character %q not allowed (letters, digits, - _ . /)", what, s, c)
		}
	}
	return nil
}

// Matches reports whether labels satisfy every requirement.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s.reqs {
		v, ok := labels[r.key]
		switch r.op {
		case opEquals:
			if !ok || v != r.values[0] {
				return false
			}
		case opNotEquals:
			if ok && v == r.values[0] {
				return false
			}
		case opIn:
			if !ok || !slices.Contains(r.values, v) {
				return false
			}
		case opNotIn:
			if ok && slices.Contains(r.values, v) {
				return false
			}
		case opExists:
			if !ok {
				return false
			}
		case opNotExists:
			if ok {
				return false
			}
		}
	}
	return true
}

// Empty reports whether the selector matches everything.
func (s Selector) Empty() bool { return len(s.reqs) == 0 }

func (s Selector) String() string { return s.text }
