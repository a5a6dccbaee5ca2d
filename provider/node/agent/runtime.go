package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	dconfig "github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const (
	// The namespace the CRI plugin (and so the kubelet) sees.
	criNamespace = "k8s.io"
	pinnedLabel  = "io.cri-containerd.pinned"
	// CRI marks the images it manages; imported and retagged names carry it too.
	managedLabel = "io.cri-containerd.image"
)

// Runtime is the node's containerd, through its own API and its CRI service on the same socket.
type Runtime struct {
	client *containerd.Client
	cri    *grpc.ClientConn
	// containerd's version ("1.6.20", "v2.4.2").
	Version string

	snapOnce sync.Once
	snap     string
	snapErr  error
}

// snapshotter is CRI's, found once per connection.
func (r *Runtime) snapshotter(ctx context.Context) (string, error) {
	r.snapOnce.Do(func() { r.snap, r.snapErr = r.criSnapshotter(nsCtx(ctx)) })
	return r.snap, r.snapErr
}

func Connect(ctx context.Context, socket string) (*Runtime, error) {
	c, err := containerd.New(socket, containerd.WithDefaultNamespace(criNamespace))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", socket, err)
	}
	v, err := c.Version(ctx)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("containerd at %s does not answer: %w", socket, err)
	}
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.Close()
		return nil, err
	}
	return &Runtime{client: c, cri: conn, Version: v.Version}, nil
}

func (r *Runtime) Close() {
	r.cri.Close()
	r.client.Close()
}

func nsCtx(ctx context.Context) context.Context { return namespaces.WithNamespace(ctx, criNamespace) }

// PinSupported: the CRI plugin honours the pinned label from containerd 1.7 on.
func PinSupported(version string) bool {
	v := strings.TrimPrefix(version, "v")
	var major, minor int
	if _, err := fmt.Sscanf(v, "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major > 1 || (major == 1 && minor >= 7)
}

// PullAll pulls (or finds present) each image, names and pins it, and reports each on its own
// log line; at most `limit` at once. It returns the images that failed.
func (r *Runtime) PullAll(ctx context.Context, imgs []Image, creds map[string]Credentials, limit int) []Image {
	sem := make(chan struct{}, limit)
	var mu sync.Mutex
	var failed []Image
	var wg sync.WaitGroup
	for _, img := range imgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			err := r.ensure(ctx, img, creds[img.Ref])
			if err == nil {
				var ev Event
				if ev, err = r.Name(ctx, img); err == nil {
					emit(ev)
					return
				}
			}
			emit(Event{Image: img.Ref, State: "failed", Error: errorText(err)})
			mu.Lock()
			failed = append(failed, img)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return failed
}

// errorText is a runtime error as a person reads it: gRPC's "rpc error: code = … desc =" prefix
// dropped, so the registry's own words come first.
func errorText(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Message()
	}
	return err.Error()
}

// ensure pulls img unless the runtime holds it already, unpacked where CRI looks. Without a
// platform, CRI's own PullImage does it (the node's registry configuration, mirrors and
// snapshotter apply, exactly as for the kubelet's pulls, which the kubelet never learns of); with
// one, containerd's client pulls that platform's manifest (CRI pulls only the node's).
func (r *Runtime) ensure(ctx context.Context, img Image, cred Credentials) error {
	snapshotter, err := r.snapshotter(ctx)
	if err != nil {
		return err
	}
	if r.present(ctx, img, snapshotter) {
		return nil
	}
	emit(Event{Image: img.Ref, State: "pulling"})
	if img.Platform == "" {
		req := &cri.PullImageRequest{Image: &cri.ImageSpec{Image: img.Ref}}
		if cred.Username != "" {
			req.Auth = &cri.AuthConfig{Username: cred.Username, Password: cred.Password}
		}
		_, err := cri.NewImageServiceClient(r.cri).PullImage(ctx, req)
		return err
	}
	p, err := platforms.Parse(img.Platform)
	if err != nil {
		return fmt.Errorf("platform %q: %w", img.Platform, err)
	}
	named, err := reference.ParseDockerRef(img.Ref)
	if err != nil {
		return err
	}
	host := reference.Domain(named)
	hosts := dconfig.ConfigureHosts(ctx, dconfig.HostOptions{
		Credentials: func(h string) (string, string, error) {
			if h == host || (host == "docker.io" && h == "registry-1.docker.io") {
				return cred.Username, cred.Password, nil
			}
			return "", "", nil
		},
	})
	_, err = r.client.Pull(nsCtx(ctx), named.String(),
		containerd.WithResolver(docker.NewResolver(docker.ResolverOptions{Hosts: hosts})),
		containerd.WithPlatformMatcher(platforms.Only(p)),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(snapshotter),
		containerd.WithPullLabels(map[string]string{managedLabel: "managed"}))
	return err
}

// present: the runtime holds img under its ref, unpacked with CRI's snapshotter.
func (r *Runtime) present(ctx context.Context, img Image, snapshotter string) bool {
	ctx = nsCtx(ctx)
	stored, err := r.client.ImageService().Get(ctx, img.Ref)
	if err != nil {
		return false
	}
	if d := digestOf(img.Ref); d != "" && stored.Target.Digest.String() != d {
		return false
	}
	i := containerd.NewImage(r.client, stored)
	if img.Platform != "" {
		if p, err := platforms.Parse(img.Platform); err == nil {
			i = containerd.NewImageWithPlatform(r.client, stored, platforms.Only(p))
		}
	}
	ok, err := i.IsUnpacked(ctx, snapshotter)
	return err == nil && ok
}

func digestOf(ref string) string {
	if at := strings.LastIndex(ref, "@"); at >= 0 {
		return ref[at+1:]
	}
	return ""
}

// ReportProgress logs the bytes the node's runtime is downloading, every interval until done.
func (r *Runtime) ReportProgress(ctx context.Context, done <-chan struct{}, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last int64
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		statuses, err := r.client.ContentStore().ListStatuses(nsCtx(ctx))
		if err != nil {
			continue
		}
		var n int64
		for _, s := range statuses {
			n += s.Offset
		}
		if n > 0 && n != last {
			emit(Event{Event: "progress", Bytes: n})
		}
		last = n
	}
}

// Name gives img its further names (same target; an existing name is moved, not an error) and
// the pinned label when asked, and says what the node now holds.
func (r *Runtime) Name(ctx context.Context, want Image) (Event, error) {
	ctx = nsCtx(ctx)
	is := r.client.ImageService()
	img, err := is.Get(ctx, want.Ref)
	if err != nil {
		return Event{}, fmt.Errorf("%s: not in the runtime after the pull: %w", want.Ref, err)
	}
	ev := Event{Image: want.Ref, State: "present", Digest: img.Target.Digest.String()}
	if want.Pin {
		if PinSupported(r.Version) {
			if err := setLabel(ctx, is, img, pinnedLabel, "pinned"); err != nil {
				return ev, fmt.Errorf("pin %s: %w", want.Ref, err)
			}
			ev.Pinned = true
		} else {
			ev.Warning = fmt.Sprintf("pin not supported by containerd %s (needs 1.7 or later)", r.Version)
		}
	}
	for _, name := range want.Names {
		if err := r.tag(ctx, img, name, ev.Pinned); err != nil {
			return ev, fmt.Errorf("name %s as %s: %w", want.Ref, name, err)
		}
	}
	return ev, nil
}

func setLabel(ctx context.Context, is images.Store, img images.Image, key, value string) error {
	if img.Labels[key] == value {
		return nil
	}
	if img.Labels == nil {
		img.Labels = map[string]string{}
	}
	img.Labels[key] = value
	_, err := is.Update(ctx, img, "labels."+key)
	return err
}

func (r *Runtime) tag(ctx context.Context, src images.Image, name string, pinned bool) error {
	is := r.client.ImageService()
	labels := map[string]string{managedLabel: "managed"}
	if pinned {
		labels[pinnedLabel] = "pinned"
	}
	next := images.Image{Name: name, Target: src.Target, Labels: labels}
	if _, err := is.Create(ctx, next); err == nil || !errdefs.IsAlreadyExists(err) {
		return err
	}
	cur, err := is.Get(ctx, name)
	if err != nil {
		return err
	}
	if cur.Target.Digest == src.Target.Digest && (!pinned || cur.Labels[pinnedLabel] == "pinned") {
		return nil
	}
	_, err = is.Update(ctx, next, "target", "labels."+managedLabel, "labels."+pinnedLabel)
	return err
}

// Check fails naming every ref or retag name the runtime no longer has, or that points elsewhere.
func (r *Runtime) Check(ctx context.Context, imgs []Image) error {
	ctx = nsCtx(ctx)
	is := r.client.ImageService()
	var missing []string
	for _, want := range imgs {
		img, err := is.Get(ctx, want.Ref)
		if err != nil {
			missing = append(missing, want.Ref)
			continue
		}
		for _, name := range want.Names {
			t, err := is.Get(ctx, name)
			if err != nil || t.Target.Digest != img.Target.Digest {
				missing = append(missing, name)
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing from the runtime: %s", strings.Join(missing, ", "))
	}
	return nil
}

// RemoveReport lists, per name, whether it was removed or why not.
type RemoveReport struct {
	Removed []string          `json:"removed"`
	Kept    map[string]string `json:"kept,omitempty"`
}

// Remove deletes the set's names (digest refs and retags) of every image no running container
// uses. Only those names: other names of the same image stay (CRI's RemoveImage would take all).
func (r *Runtime) Remove(ctx context.Context, imgs []Image) (RemoveReport, error) {
	ctx = nsCtx(ctx)
	report := RemoveReport{Removed: []string{}, Kept: map[string]string{}}
	inUse, err := r.imagesInUse(ctx)
	if err != nil {
		return report, err
	}
	is := r.client.ImageService()
	for _, want := range imgs {
		names := append([]string{want.Ref}, want.Names...)
		if r.anyInUse(ctx, names, inUse) {
			for _, n := range names {
				report.Kept[n] = "in use by a running container"
			}
			continue
		}
		var targets []string
		for _, n := range names {
			if img, err := is.Get(ctx, n); err == nil {
				targets = append(targets, img.Target.Digest.String())
			}
			if err := is.Delete(ctx, n); err != nil && !errdefs.IsNotFound(err) {
				return report, fmt.Errorf("remove %s: %w", n, err)
			}
			report.Removed = append(report.Removed, n)
		}
		if err := r.dropIDNames(ctx, targets); err != nil {
			return report, err
		}
	}
	return report, nil
}

// dropIDNames removes the image-ID names ("sha256:…", which CRI adds on every pull) of targets
// that no other name keeps: otherwise the image would stay in the store, its space never freed.
func (r *Runtime) dropIDNames(ctx context.Context, targets []string) error {
	is := r.client.ImageService()
	for _, t := range targets {
		left, err := is.List(ctx, "target.digest=="+t)
		if err != nil {
			return fmt.Errorf("list names of %s: %w", t, err)
		}
		for _, img := range left {
			if _, err := digest.Parse(img.Name); err != nil {
				left = nil // a real name still holds the image
				break
			}
		}
		for _, img := range left {
			if err := is.Delete(ctx, img.Name); err != nil && !errdefs.IsNotFound(err) {
				return fmt.Errorf("remove %s: %w", img.Name, err)
			}
		}
	}
	return nil
}

// anyInUse: whether the image behind any of these names (by manifest or config digest) is used.
func (r *Runtime) anyInUse(ctx context.Context, names []string, inUse map[string]bool) bool {
	for _, n := range names {
		img, err := r.client.ImageService().Get(ctx, n)
		if err != nil {
			continue
		}
		if inUse[img.Target.Digest.String()] {
			return true
		}
		if cfg, err := containerd.NewImage(r.client, img).Config(ctx); err == nil && inUse[cfg.Digest.String()] {
			return true
		}
	}
	return false
}

// imagesInUse: digests (image IDs, manifest digests) and names of the images running containers
// use: those CRI reports (the kubelet's), and any other container with a running task in the
// namespace (ctr run, other tools).
func (r *Runtime) imagesInUse(ctx context.Context) (map[string]bool, error) {
	res, err := cri.NewRuntimeServiceClient(r.cri).ListContainers(ctx, &cri.ListContainersRequest{
		Filter: &cri.ContainerFilter{State: &cri.ContainerStateValue{State: cri.ContainerState_CONTAINER_RUNNING}},
	})
	if err != nil {
		return nil, fmt.Errorf("list running containers: %w", err)
	}
	used := map[string]bool{}
	for _, c := range res.Containers {
		used[c.ImageRef] = true
		if c.Image != nil {
			used[c.Image.Image] = true
		}
	}
	containers, err := r.client.Containers(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	for _, c := range containers {
		task, err := c.Task(ctx, nil)
		if err != nil {
			continue // no task: not running
		}
		st, err := task.Status(ctx)
		if err != nil || st.Status != containerd.Running {
			continue
		}
		if img, err := c.Image(ctx); err == nil {
			used[img.Target().Digest.String()] = true
			if cfg, err := img.Config(ctx); err == nil {
				used[cfg.Digest.String()] = true
			}
		}
	}
	return used, nil
}

// Stored is one image an import created.
type Stored struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
	Config string `json:"config"`
}

// Import stores an archive (docker-archive or oci-archive, uncompressed) under the names it
// carries (RepoTags, ref.name), unpacked with the snapshotter CRI uses, so pods start from it
// without a registry.
func (r *Runtime) Import(ctx context.Context, archive io.Reader) ([]Stored, error) {
	ctx = nsCtx(ctx)
	snapshotter, err := r.snapshotter(ctx)
	if err != nil {
		return nil, err
	}
	imgs, err := r.client.Import(ctx, archive,
		containerd.WithImageLabels(map[string]string{managedLabel: "managed"}),
		// An oci-archive's ref.name is stored as written: normalise it as docker-archive names are.
		containerd.WithImageRefTranslator(normaliseName))
	if err != nil {
		return nil, fmt.Errorf("import into containerd: %w", err)
	}
	var out []Stored
	for _, img := range imgs {
		i := containerd.NewImage(r.client, img)
		if err := i.Unpack(ctx, snapshotter); err != nil {
			return nil, fmt.Errorf("unpack %s with %s: %w", img.Name, snapshotter, err)
		}
		cfg, err := i.Config(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, Stored{Name: img.Name, Digest: img.Target.Digest.String(), Config: cfg.Digest.String()})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the archive names no image (no RepoTags, no org.opencontainers.image.ref.name)")
	}
	return out, nil
}

func normaliseName(name string) string {
	if n, err := reference.ParseDockerRef(name); err == nil {
		return n.String()
	}
	return name
}

// criSnapshotter finds the snapshotter CRI unpacks with, so imports land where the kubelet's
// containers look: the snapshot label CRI left on an image it pulled (the agent's own image,
// at least), else containerd 1.x's verbose CRI status, else containerd's default.
func (r *Runtime) criSnapshotter(ctx context.Context) (string, error) {
	imgs, err := r.client.ImageService().List(ctx)
	if err != nil {
		return "", fmt.Errorf("list images: %w", err)
	}
	for _, img := range imgs {
		cfg, err := containerd.NewImage(r.client, img).Config(ctx)
		if err != nil {
			continue
		}
		info, err := r.client.ContentStore().Info(ctx, cfg.Digest)
		if err != nil {
			continue
		}
		for k := range info.Labels {
			if s, ok := strings.CutPrefix(k, "containerd.io/gc.ref.snapshot."); ok && s != "" {
				return strings.SplitN(s, "/", 2)[0], nil
			}
		}
	}
	st, err := cri.NewRuntimeServiceClient(r.cri).Status(ctx, &cri.StatusRequest{Verbose: true})
	if err == nil {
		var cfg any
		if json.Unmarshal([]byte(st.Info["config"]), &cfg) == nil {
			if s := findKey(cfg, "snapshotter"); s != "" {
				return s, nil
			}
		}
	}
	return "overlayfs", nil
}

// findKey returns the first non-empty string under key anywhere in a JSON value.
func findKey(v any, key string) string {
	switch t := v.(type) {
	case map[string]any:
		if s, ok := t[key].(string); ok && s != "" {
			return s
		}
		for _, x := range t {
			if s := findKey(x, key); s != "" {
				return s
			}
		}
	case []any:
		for _, x := range t {
			if s := findKey(x, key); s != "" {
				return s
			}
		}
	}
	return ""
}
