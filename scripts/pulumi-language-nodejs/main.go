// Command pulumi-language-nodejs is the project's Node.js language host: the gRPC server the
// Pulumi engine starts to run a program. The upstream host is a separate Go module that the
// module proxy on these machines does not serve, so the project carries this small one.
//
// It does what the engine needs for `preview`, `up`, `refresh` and `destroy` of a Node.js
// program: it starts `node …/@pulumi/pulumi/cmd/run` with the engine's addresses, flags and
// config, and maps the exit code onto the RunResponse (32 = the program already reported its
// error). Plugin discovery returns nothing: programs here use dynamic providers only, which the
// engine loads from PATH (pulumi-resource-pulumi-nodejs). Scaffolding RPCs (`pulumi new`,
// `convert`, `install`) are left unimplemented.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// version is stamped by scripts/pulumi.sh with the SDK version it was built against.
var version = "v0.0.0"

// exitAfterLoggedError is the Node SDK's exit code for "the error is already in the engine log".
const exitAfterLoggedError = 32

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engineAddress string
}

func (h *host) Handshake(_ context.Context, req *pulumirpc.LanguageHandshakeRequest) (*pulumirpc.LanguageHandshakeResponse, error) {
	if req.GetEngineAddress() != "" {
		h.engineAddress = req.GetEngineAddress()
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

func (h *host) GetRequiredPlugins(context.Context, *pulumirpc.GetRequiredPluginsRequest) (*pulumirpc.GetRequiredPluginsResponse, error) {
	return &pulumirpc.GetRequiredPluginsResponse{}, nil
}

func (h *host) GetRequiredPackages(context.Context, *pulumirpc.GetRequiredPackagesRequest) (*pulumirpc.GetRequiredPackagesResponse, error) {
	return &pulumirpc.GetRequiredPackagesResponse{}, nil
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	dir, program := req.GetPwd(), req.GetProgram()
	options := map[string]any{}
	if info := req.GetInfo(); info != nil {
		if info.GetProgramDirectory() != "" {
			dir = info.GetProgramDirectory()
		}
		if info.GetEntryPoint() != "" {
			program = info.GetEntryPoint()
		}
		if info.GetOptions() != nil {
			options = info.GetOptions().AsMap()
		}
	}
	runScript, err := findRunScript(dir)
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}

	var args []string
	if nodeargs, ok := options["nodeargs"].(string); ok && nodeargs != "" {
		args = append(args, strings.Fields(nodeargs)...)
	}
	args = append(args, runScript,
		"--monitor="+req.GetMonitorAddress(),
		"--project="+req.GetProject(),
		"--stack="+req.GetStack(),
		"--pwd="+dir,
		"--parallel="+strconv.Itoa(int(req.GetParallel())))
	if h.engineAddress != "" {
		args = append(args, "--engine="+h.engineAddress)
	}
	if req.GetOrganization() != "" {
		args = append(args, "--organization="+req.GetOrganization())
	}
	if root := req.GetInfo().GetRootDirectory(); root != "" {
		args = append(args, "--root-directory="+root)
	}
	if req.GetDryRun() {
		args = append(args, "--dry-run")
	}
	args = append(args, program)
	args = append(args, req.GetArgs()...)

	// The SDK parses these unconditionally: an empty stack config must still be an object.
	configMap := req.GetConfig()
	if configMap == nil {
		configMap = map[string]string{}
	}
	config, err := json.Marshal(configMap)
	if err != nil {
		return nil, err
	}
	secretKeys, err := json.Marshal(append([]string{}, req.GetConfigSecretKeys()...))
	if err != nil {
		return nil, err
	}
	env := append(os.Environ(),
		"PULUMI_CONFIG="+string(config),
		"PULUMI_CONFIG_SECRET_KEYS="+string(secretKeys),
		// Like upstream, TypeScript (ts-node) is on unless the project's runtime options say otherwise.
		"PULUMI_NODEJS_TYPESCRIPT="+strconv.FormatBool(options["typescript"] != false))
	if tsconfig, ok := options["tsconfig"].(string); ok && tsconfig != "" {
		env = append(env, "PULUMI_NODEJS_TSCONFIG_PATH="+tsconfig)
	}

	cmd := exec.CommandContext(ctx, "node", args...)
	cmd.Dir = dir
	cmd.Env = env
	// The engine shows the host's own stdout and stderr: the program's console output goes there.
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			if status, ok := exit.Sys().(syscall.WaitStatus); ok && status.ExitStatus() == exitAfterLoggedError {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{Error: fmt.Sprintf("program exited with code %d", exit.ExitCode())}, nil
		}
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("starting node: %v. Is Node.js >= 22 on PATH?", err)}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

// findRunScript resolves @pulumi/pulumi the way Node would from the program directory.
func findRunScript(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := abs; ; d = filepath.Dir(d) {
		candidate := filepath.Join(d, "node_modules", "@pulumi", "pulumi", "cmd", "run")
		if _, err := os.Stat(filepath.Join(candidate, "index.js")); err == nil {
			return candidate, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("run %s: @pulumi/pulumi is not installed in any node_modules above it. Run npm install (or scripts/bootstrap.sh) first", abs)
		}
	}
}

func main() {
	// Flags the engine passes to every plugin (glog, linked in through the sdk, already defines
	// -logtostderr and -v); tracing goes to the engine's own logs.
	for _, name := range []string{"tracing", "root"} {
		if flag.Lookup(name) == nil {
			flag.String(name, "", "ignored")
		}
	}
	flag.Parse()

	h := &host{}
	if flag.NArg() > 0 {
		h.engineAddress = flag.Arg(0)
	}
	cancel := make(chan bool)
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: cancel,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-nodejs: %v\n", err)
		os.Exit(1)
	}
	// The engine reads the port from the first line of stdout.
	fmt.Println(handle.Port)
	if err := <-handle.Done; err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-nodejs: %v\n", err)
		os.Exit(1)
	}
}
