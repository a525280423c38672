//go:build !linux

package worker

// fileWatcher polls: only Linux has inotify here.
type fileWatcher struct{}

func newFileWatcher() *fileWatcher { return &fileWatcher{} }

func (*fileWatcher) watch(string) (changed <-chan struct{}, stop func()) { return pollFile() }

func (*fileWatcher) close() {}
