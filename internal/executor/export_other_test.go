//go:build unix && !linux

package executor

// WithoutNamespaces does nothing where there are no namespaces.
func WithoutNamespaces(e *Executor) {}

// WarmShims lists nothing: there are no warm shims off Linux.
func WarmShims(e *Executor) (shims, inits []int) { return nil, nil }

// CgroupBases: no cgroups here.
func CgroupBases(*Executor) []string { return nil }
