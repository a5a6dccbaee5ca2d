// imageyard prepull agent: the one static binary a PrePullSet runs on every node.
//
//	agent install DIR   copy this binary to DIR/agent (first init container: a shared emptyDir)
//	agent pulled        do nothing, exit 0 (each image's init container: the kubelet's pull is the work)
//	agent serve         retag and pin the set's images, report, then wait (the DaemonSet's container)
//	agent check         exit 1 naming every image or retag name the runtime lacks (readiness probe)
//	agent import        import a docker-archive/oci-archive from stdin, retag/pin it, print what was stored
//	agent remove        remove the set's names unless a running container uses the image
//
// Configuration comes from the environment the DaemonSet sets: IMAGEYARD_IMAGES (JSON list of
// {ref, retagAs, pin}), CONTAINERD_SOCKET (may hold ${NODE_NAME}), NODE_NAME (downward API).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// appliedMarker tells the probe (a separate process in the same container) that serve is done.
var appliedMarker = filepath.Join(envOr("IMAGEYARD_STATE_DIR", "/tmp"), "imageyard-applied")

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// Image is one entry of IMAGEYARD_IMAGES.
type Image struct {
	// Ref is repository@sha256:… as the kubelet pulled it.
	Ref     string   `json:"ref"`
	RetagAs []string `json:"retagAs,omitempty"`
	Pin     bool     `json:"pin,omitempty"`
	// Archive: imported through `agent import`, not pulled by the kubelet; serve skips it until then.
	Archive bool `json:"archive,omitempty"`
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: agent install|pulled|serve|check|import|remove")
	}
	var err error
	switch os.Args[1] {
	case "pulled":
		return
	case "install":
		if len(os.Args) != 3 {
			fail("usage: agent install DIR")
		}
		err = install(os.Args[2])
	case "serve":
		err = serve()
	case "check":
		if _, serr := os.Stat(appliedMarker); serr != nil {
			fail("agent serve has not applied retags and pins yet")
		}
		err = withRuntime(20*time.Second, func(ctx context.Context, r *Runtime) error { return r.Check(ctx, mustImages()) })
	case "remove":
		err = withRuntime(2*time.Minute, func(ctx context.Context, r *Runtime) error {
			report, err := r.Remove(ctx, mustImages())
			if err == nil {
				err = json.NewEncoder(os.Stdout).Encode(report)
			}
			return err
		})
	case "import":
		err = withRuntime(time.Hour, func(ctx context.Context, r *Runtime) error {
			stored, err := r.Import(ctx, os.Stdin)
			if err != nil {
				return err
			}
			names := map[string]bool{}
			for _, s := range stored {
				names[s.Name] = true
			}
			var mine []Image
			for _, img := range mustImages() {
				if names[img.Ref] {
					mine = append(mine, img)
				}
			}
			if _, err := r.Apply(ctx, mine); err != nil {
				return err
			}
			return json.NewEncoder(os.Stdout).Encode(stored)
		})
	default:
		fail("unknown command " + os.Args[1])
	}
	if err != nil {
		fail(err.Error())
	}
}

// fail prints the reason where the kubelet keeps it (termination log) and on stderr.
func fail(msg string) {
	_ = os.WriteFile("/dev/termination-log", []byte(msg), 0o644)
	fmt.Fprintln(os.Stderr, msg)
	os.Exit(1)
}

func install(dir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	in, err := os.Open(self)
	if err != nil {
		return err
	}
	defer in.Close()
	dst := filepath.Join(dir, "agent")
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

func mustImages() []Image {
	var imgs []Image
	if err := json.Unmarshal([]byte(os.Getenv("IMAGEYARD_IMAGES")), &imgs); err != nil {
		fail("IMAGEYARD_IMAGES is not a JSON list of images: " + err.Error())
	}
	return imgs
}

func socketPath() string {
	s := envOr("CONTAINERD_SOCKET", "/run/containerd/containerd.sock")
	return os.Expand(s, func(k string) string { return os.Getenv(k) })
}

func withRuntime(timeout time.Duration, f func(context.Context, *Runtime) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, err := Connect(ctx, socketPath())
	if err != nil {
		return err
	}
	defer r.Close()
	return f(ctx, r)
}

// serve applies retags and pins once, prints a one-line JSON report, then waits for SIGTERM.
// Repair is the pod's restart: the readiness probe (check) reports anything lost later.
func serve() error {
	err := withRuntime(5*time.Minute, func(ctx context.Context, r *Runtime) error {
		report, err := r.Apply(ctx, mustImages())
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(report)
	})
	if err != nil {
		return err
	}
	if err := os.WriteFile(appliedMarker, nil, 0o644); err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return nil
}
