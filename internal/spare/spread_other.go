//go:build !linux

package spare

import "errors"

// Spread has nothing to ask elsewhere (see spread_linux.go).
func Spread(dir string) error { return errors.ErrUnsupported }
