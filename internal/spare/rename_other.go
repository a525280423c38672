//go:build !linux

package spare

import "errors"

// renameNoReplace has no portable form: rename replaces an existing file
// on the other systems this builds for, so no spare is ever taken there.
func renameNoReplace(src, dst string) error { return errors.ErrUnsupported }

func isUnsupported(err error) bool { return errors.Is(err, errors.ErrUnsupported) }
