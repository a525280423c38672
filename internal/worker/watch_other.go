//go:build !linux

package worker

// watchFile polls: only Linux has inotify here.
func watchFile(path string) (changed <-chan struct{}, stop func()) {
	return pollFile()
}
