// imageyard prepull agent: the one static binary a PrePullSet runs on every node.
//
//	agent serve    pull the set's images into the node's containerd, name and pin them, report, wait
//	agent check    exit 1 naming every image or name the runtime lacks (readiness probe)
//	agent import   import a docker-archive/oci-archive from stdin, name/pin it, print what was stored
//	agent remove   remove the set's names unless a running container uses the image
//
// The agent pulls, not the kubelet: kubelet ≥ 1.35 verifies pull credentials per image name for
// images it pulled itself (imagePullCredentialsVerificationPolicy), so a name added to a
// kubelet-pulled image is refused to pods with pull policy Never. Images pulled outside the
// kubelet count as preloaded and serve every name.
//
// Configuration comes from the environment the DaemonSet sets: IMAGEYARD_IMAGES (JSON list of
// {ref, names, platform, pin, archive}), CONTAINERD_SOCKET (may hold ${NODE_NAME}), NODE_NAME
// (downward API), IMAGEYARD_AUTH_FILE (a mounted Secret: ref → {username, password}; never in the
// environment, arguments or output).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
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
	// Ref is repository@sha256:… (what is pulled) or, for an archive, the name it carries.
	Ref string `json:"ref"`
	// Names the image answers to besides Ref: the tag the user wrote, retagAs.
	Names []string `json:"names,omitempty"`
	// Platform ("linux/arm64"): pull exactly this platform's manifest.
	Platform string `json:"platform,omitempty"`
	Pin      bool   `json:"pin,omitempty"`
	// Archive: imported through `agent import`, not pulled; serve skips it until then.
	Archive bool `json:"archive,omitempty"`
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: agent serve|check|import|remove")
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve()
	case "check":
		if _, serr := os.Stat(appliedMarker); serr != nil {
			fail("agent serve has not pulled every image yet")
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
			for _, img := range mustImages() {
				if names[img.Ref] {
					if _, err := r.Name(ctx, img); err != nil {
						return err
					}
				}
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

// Event is one line of the agent's log: what the provider reads to report per-node progress.
type Event struct {
	Image   string `json:"image,omitempty"`
	State   string `json:"state,omitempty"`
	Digest  string `json:"digest,omitempty"`
	Pinned  bool   `json:"pinned,omitempty"`
	Warning string `json:"warning,omitempty"`
	Error   string `json:"error,omitempty"`
	// Node-level events: "runtime", "progress", "retry", "done".
	Event   string `json:"event,omitempty"`
	Runtime string `json:"runtime,omitempty"`
	Bytes   int64  `json:"bytes,omitempty"`
	Seconds int    `json:"seconds,omitempty"`
}

var emitMu sync.Mutex

func emit(e Event) {
	emitMu.Lock()
	defer emitMu.Unlock()
	_ = json.NewEncoder(os.Stdout).Encode(e)
}

// Pulls at once on one node: the registry and the node's disk are shared.
const pullConcurrency = 3

const (
	firstRetry = 5 * time.Second
	maxRetry   = 5 * time.Minute
)

// serve pulls every registry image (those the runtime already holds are only named and pinned),
// retrying failed ones with backoff, then marks itself done for the probe and waits for SIGTERM.
// Repair after that is the pod's re-creation: the readiness probe (check) reports a lost name.
func serve() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	r, err := Connect(ctx, socketPath())
	if err != nil {
		return err
	}
	defer r.Close()
	emit(Event{Event: "runtime", Runtime: r.Version})
	var todo []Image
	for _, img := range mustImages() {
		if !img.Archive {
			todo = append(todo, img)
		}
	}
	done := make(chan struct{})
	go r.ReportProgress(ctx, done, 5*time.Second)
	wait := firstRetry
	for len(todo) > 0 {
		todo = r.PullAll(ctx, todo, readCredentials(), pullConcurrency)
		if len(todo) == 0 || ctx.Err() != nil {
			break
		}
		emit(Event{Event: "retry", Seconds: int(wait / time.Second)})
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(wait*2, maxRetry)
	}
	close(done)
	if ctx.Err() != nil {
		return nil
	}
	if err := os.WriteFile(appliedMarker, nil, 0o644); err != nil {
		return err
	}
	emit(Event{Event: "done"})
	<-ctx.Done()
	return nil
}

// Credentials for one image.
type Credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// readCredentials reads the mounted Secret afresh (a retry sees corrected credentials). A missing
// file means no image has credentials.
func readCredentials() map[string]Credentials {
	out := map[string]Credentials{}
	file := os.Getenv("IMAGEYARD_AUTH_FILE")
	if file == "" {
		return out
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return out
	}
	if err := json.Unmarshal(b, &out); err != nil {
		// The content is never printed: it holds passwords.
		emit(Event{Event: "warning", Warning: "the credentials file is not valid JSON; pulling without credentials"})
		return map[string]Credentials{}
	}
	return out
}
