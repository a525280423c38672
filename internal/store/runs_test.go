package store_test

import (
	"testing"

	"github.com/devops-platform/devops/internal/store"
	"github.com/devops-platform/devops/internal/store/storetest"
)

var _ storetest.RunStore = (*store.JetStream)(nil)

func TestJetStreamRuns(t *testing.T) {
	storetest.RunRuns(t, func(tb testing.TB) storetest.RunStore {
		return openJetStream(tb, tb.TempDir())
	})
}
