package cli

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/devops-platform/devops/internal/client"
	"github.com/devops-platform/devops/internal/manager"
)

// securityFlags are the client's credentials.
type securityFlags struct {
	ca        string // --ca
	tokenFile string // --token-file
	insecure  bool   // --insecure
}

// Where a client looks for its CA and token when no flag or variable says:
// the manager's data dir under the current directory, so that a person on
// the manager's machine (and `make run`) needs nothing more.
const (
	defaultCA    = "./data/manager/ca.crt"
	defaultToken = "./data/manager/admin.token"
)

func (f *securityFlags) register(root *cobra.Command) {
	pf := root.PersistentFlags()
	pf.StringVar(&f.ca, "ca", "", "CA certificate that signs the manager's (default $DEVOPS_CA, else "+defaultCA+")")
	pf.StringVar(&f.tokenFile, "token-file", "", "file holding the API token (default $DEVOPS_TOKEN, else the token devops login kept, else "+defaultToken+")")
	pf.BoolVar(&f.insecure, "insecure", false, "plaintext, no authentication: development on loopback only")
}

// caFile finds the CA: --ca, $DEVOPS_CA, else the manager's data dir here.
func (g *globals) caFile() (string, error) {
	switch {
	case g.sec.ca != "":
		return g.sec.ca, nil
	case g.env.getenv("DEVOPS_CA") != "":
		return g.env.getenv("DEVOPS_CA"), nil
	}
	if _, err := os.Stat(defaultCA); err == nil {
		return defaultCA, nil
	}
	return "", errors.New("no CA certificate to verify the manager with: set DEVOPS_CA or --ca (the manager writes ca.crt in its data dir), or --insecure for a development manager")
}

// loginFile is where `devops login` keeps the token.
func (g *globals) loginFile() string {
	dir := g.env.getenv("DEVOPS_CONFIG_DIR")
	if dir == "" {
		base := g.env.getenv("XDG_CONFIG_HOME")
		if base == "" {
			home := g.env.getenv("HOME")
			if home == "" {
				return ""
			}
			base = filepath.Join(home, ".config")
		}
		dir = filepath.Join(base, "devops")
	}
	return filepath.Join(dir, "token")
}

// token finds the API token: --token-file, $DEVOPS_TOKEN, the login file,
// else the manager's admin.token here. Empty when there is none: the
// manager answers Unauthenticated with what to do.
func (g *globals) token() (string, error) {
	if g.sec.tokenFile != "" {
		b, err := os.ReadFile(g.sec.tokenFile)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if t := g.env.getenv("DEVOPS_TOKEN"); t != "" {
		return strings.TrimSpace(t), nil
	}
	for _, f := range []string{g.loginFile(), defaultToken} {
		if f == "" {
			continue
		}
		if b, err := os.ReadFile(f); err == nil {
			return strings.TrimSpace(string(b)), nil
		}
	}
	return "", nil
}

func (g *globals) clientOptions() ([]client.Option, error) {
	if g.sec.insecure {
		return nil, nil
	}
	ca, err := g.caFile()
	if err != nil {
		return nil, err
	}
	tc, err := client.TLSConfig(ca)
	if err != nil {
		return nil, err
	}
	tok, err := g.token()
	if err != nil {
		return nil, err
	}
	return []client.Option{client.WithTLS(tc), client.WithToken(tok)}, nil
}

// joinToken finds a worker's join token: --join-token-file, else
// $DEVOPS_JOIN_TOKEN.
func (g *globals) joinToken(file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--join-token-file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return strings.TrimSpace(g.env.getenv("DEVOPS_JOIN_TOKEN")), nil
}

func newLoginCmd(env *Env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Check an API token against the manager and keep it for later commands",
		Long: "Reads a token from --token-file, $DEVOPS_TOKEN or standard input, checks it with the manager,\n" +
			"and writes it (mode 0600) to $DEVOPS_CONFIG_DIR/token, by default ~/.config/devops/token.",
		Example: `  devops login --token-file ops.token
  echo "$TOKEN" | devops login`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := g.token()
			if err != nil {
				return err
			}
			if g.sec.tokenFile == "" && env.getenv("DEVOPS_TOKEN") == "" {
				line, err := awaitRead(cmd.Context(), nil, func() (string, error) {
					return bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				})
				if cmd.Context().Err() != nil {
					return cmd.Context().Err() // Ctrl-C
				}
				if err != nil && line == "" {
					return errors.New("login: no token on standard input")
				}
				tok = strings.TrimSpace(line)
			}
			ca, err := g.caFile()
			if err != nil {
				return err
			}
			tc, err := client.TLSConfig(ca)
			if err != nil {
				return err
			}
			c, err := client.Dial(g.manager, client.WithTLS(tc), client.WithToken(tok))
			if err != nil {
				return err
			}
			defer c.Close()
			who, role, scope, err := c.WhoAmI(cmd.Context())
			if err != nil {
				return err
			}
			path := g.loginFile()
			if path == "" {
				return errors.New("login: no HOME or DEVOPS_CONFIG_DIR to keep the token in")
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return err
			}
			if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
				return err
			}
			if scope == "" {
				scope = "everything"
			}
			fmt.Fprintf(env.Stdout, "logged in to %s as %s (role %s, scope %s); token kept in %s\n", g.manager, who, role, scope, path)
			return nil
		},
	}
	return cmd
}

func addManagerSecurityFlags(cmd *cobra.Command, sc *manager.SecurityConfig) {
	f := cmd.Flags()
	f.StringVar(&sc.CACert, "ca-cert", "", "your own CA certificate (default: one created in --data-dir)")
	f.StringVar(&sc.CAKey, "ca-key", "", "the key of --ca-cert, needed to issue worker certificates")
	f.StringVar(&sc.Cert, "tls-cert", "", "your own server certificate (default: issued by the CA at each start)")
	f.StringVar(&sc.Key, "tls-key", "", "the key of --tls-cert")
	f.StringSliceVar(&sc.Advertise, "advertise", nil, "extra host names or addresses the server certificate covers (comma separated)")
	f.DurationVar(&sc.WorkerCertTTL, "worker-cert-ttl", time.Hour, "lifetime of worker certificates (renewed at two thirds)")
	f.Float64Var(&sc.RunRate, "run-rate", 10, "run requests per second allowed per client on average (negative: no limit)")
	f.IntVar(&sc.RunBurst, "run-burst", 50, "run requests a client may send in a burst")
}

// parseSecretEnv merges --env and --secret-env; the keys of the latter are
// marked secret.
func parseSecretEnv(envs, secrets []string, lookup func(string) (string, bool)) (map[string]string, []string, error) {
	env, err := parseEnv("--env", envs, lookup)
	if err != nil {
		return nil, nil, err
	}
	secret, err := parseEnv("--secret-env", secrets, lookup)
	if err != nil {
		return nil, nil, err
	}
	if env == nil && len(secret) > 0 {
		env = map[string]string{}
	}
	var keys []string
	for k, v := range secret {
		env[k] = v
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return env, keys, nil
}
