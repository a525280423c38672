//go:build !unix

package cli

import (
	"errors"
	"runtime"

	"github.com/spf13/cobra"
)

// newWorkerCmd is a worker that says where workers run: the executor needs a
// Unix process model (sessions, signals to process groups, and on Linux
// namespaces and cgroups), so on this OS the binary is a client and a
// manager only.
func newWorkerCmd(env *Env, g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "worker",
		Short: "Run a worker (Linux and other Unix systems only)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("a worker runs on Linux or another Unix system, not on " + runtime.GOOS + ": run the worker there, and this binary as a client or a manager")
		},
	}
}
