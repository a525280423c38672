package executor

// WithoutNamespaces makes e start processes through the init but outside
// namespaces, so tests reach the cgroup-only paths on a root machine.
func WithoutNamespaces(e *Executor) {
	e.platform.namespaces = false
}
