package store_test

import (
	"testing"

	"github.com/devops-platform/devops/internal/store"
	"github.com/devops-platform/devops/internal/store/storetest"
)

var _ storetest.Store = (*store.Memory)(nil)

func TestMemory(t *testing.T) {
	storetest.Run(t, func(tb testing.TB) storetest.Store {
		m := store.NewMemory()
		m.MaxProcessOutputBytes = storetest.MaxProcessOutputBytes
		return m
	})
}
