//go:build unix && !linux

package executor

// WithoutNamespaces does nothing where there are no namespaces.
func WithoutNamespaces(e *Executor) {}
