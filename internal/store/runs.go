package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/devops-platform/devops"
)

// runBucket holds fleet run records, one key per run, like processBucket.
const runBucket = "runs"

// runs returns the runs bucket, creating it on first use. It is looked up
// per call rather than opened in init so that stores written before fleet
// runs existed need no migration; the lookup is an in-process request.
func (s *JetStream) runs(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := s.js.KeyValue(ctx, runBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:  runBucket,
			History: 1,
			Storage: jetstream.FileStorage,
		})
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", runBucket, err)
	}
	return kv, nil
}

// PutRun stores r, replacing the record with the same ID.
func (s *JetStream) PutRun(ctx context.Context, r devops.Run) error {
	kv, err := s.runs(ctx)
	if err == nil {
		err = put(ctx, kv, string(r.ID), r)
	}
	if err != nil {
		return fmt.Errorf("put run %s: %w", r.ID, err)
	}
	return nil
}

// Run returns the record of run id, or an error wrapping ErrNotFound.
func (s *JetStream) Run(ctx context.Context, id devops.RunID) (devops.Run, error) {
	var r devops.Run
	k, err := key(string(id))
	if err != nil {
		return r, fmt.Errorf("get run %s: %w", id, err)
	}
	kv, err := s.runs(ctx)
	if err != nil {
		return r, fmt.Errorf("get run %s: %w", id, err)
	}
	e, err := kv.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return r, fmt.Errorf("get run %s: %w", id, devops.ErrNotFound)
	}
	if err != nil {
		return r, fmt.Errorf("get run %s: %w", id, err)
	}
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return r, fmt.Errorf("get run %s: decode: %w", id, err)
	}
	return r, nil
}

// Runs returns all run records sorted by ID, which is creation order.
func (s *JetStream) Runs(ctx context.Context) ([]devops.Run, error) {
	kv, err := s.runs(ctx)
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	rs, err := list[devops.Run](ctx, kv)
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	slices.SortFunc(rs, func(a, b devops.Run) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return rs, nil
}
