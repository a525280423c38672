package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/devops-platform/devops/api/devops/v1"
	"github.com/devops-platform/devops/internal/client"
	"github.com/devops-platform/devops/internal/wire"
)

// `-o json` prints the API's own messages in protobuf's JSON mapping, so a
// script reads the schema that api/devops/v1/*.proto documents: snake_case
// field names, states by name (PROCESS_STATE_RUNNING), RFC 3339 times and
// durations as "30s", the same as any gRPC client (grpcurl) sees. Before,
// it printed the manager's Go records, whose states were bare numbers and
// durations nanoseconds. Scalars, lists and maps are printed even when
// empty (exit_code 0 is there for jq); a time or duration that is not set
// (ended_at of a running process) is left out.
func marshalJSON(m proto.Message) ([]byte, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding %s as JSON: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	return b, nil
}

// writeJSON prints one message, indented.
func writeJSON(w io.Writer, m proto.Message) error {
	b, err := marshalJSON(m)
	if err != nil {
		return err
	}
	return writeIndented(w, b)
}

// writeJSONList prints messages as one JSON array, indented; none is [].
func writeJSONList[M proto.Message](w io.Writer, ms []M) error {
	items := make([]json.RawMessage, len(ms))
	for i, m := range ms {
		b, err := marshalJSON(m)
		if err != nil {
			return err
		}
		items[i] = b
	}
	b, err := json.Marshal(items)
	if err != nil {
		return fmt.Errorf("encoding a list as JSON: %w", err)
	}
	return writeIndented(w, b)
}

// writeIndented re-indents b, which also steadies protojson's output: it
// varies its spacing on purpose so that nobody compares its bytes.
func writeIndented(w io.Writer, b []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "  "); err != nil {
		return fmt.Errorf("indenting JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := buf.WriteTo(w)
	return err
}

// convertAll converts each of xs to its message.
func convertAll[T any, M proto.Message](xs []T, convert func(T) M) []M {
	ms := make([]M, len(xs))
	for i, x := range xs {
		ms[i] = convert(x)
	}
	return ms
}

// tokenToPB is the message a token came in as.
func tokenToPB(t client.TokenInfo) *pb.Token {
	return &pb.Token{Id: t.ID, Role: t.Role, Scope: t.Scope, Description: t.Description, CreatedBy: t.CreatedBy,
		CreatedAt: wire.Timestamp(t.CreatedAt), ExpiresAt: wire.Timestamp(t.ExpiresAt), Revoked: t.Revoked}
}

// auditToPB is the message an audit entry came in as.
func auditToPB(e client.AuditEntry) *pb.AuditEntry {
	return &pb.AuditEntry{Time: wire.Timestamp(e.Time), Principal: e.Principal, Role: e.Role, Action: e.Action, Argv: e.Argv,
		Workers: e.Workers, Target: e.Target, Result: e.Result, Peer: e.Peer, Stdin: e.Stdin}
}
