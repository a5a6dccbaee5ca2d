package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
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

// NodeReport is what serve prints: per image, the names it answers to and whether it is pinned.
type NodeReport struct {
	Runtime string        `json:"runtime"`
	Images  []ImageReport `json:"images"`
}

type ImageReport struct {
	Ref     string   `json:"ref"`
	Digest  string   `json:"digest"`
	Retags  []string `json:"retags,omitempty"`
	Pinned  bool     `json:"pinned"`
	Warning string   `json:"warning,omitempty"`
}

// Apply gives every image its retagAs names (same target; an existing name is moved, not an
// error) and the pinned label when asked.
func (r *Runtime) Apply(ctx context.Context, imgs []Image) (NodeReport, error) {
	ctx = nsCtx(ctx)
	is := r.client.ImageService()
	report := NodeReport{Runtime: r.Version}
	for _, want := range imgs {
		img, err := is.Get(ctx, want.Ref)
		if err != nil && want.Archive && errdefs.IsNotFound(err) {
			continue // not imported yet: the provider streams it to this node
		}
		if err != nil {
			return report, fmt.Errorf("%s: not in the runtime after the kubelet pulled it: %w", want.Ref, err)
		}
		rep := ImageReport{Ref: want.Ref, Digest: img.Target.Digest.String()}
		if want.Pin {
			if PinSupported(r.Version) {
				if err := setLabel(ctx, is, img, pinnedLabel, "pinned"); err != nil {
					return report, fmt.Errorf("pin %s: %w", want.Ref, err)
				}
				rep.Pinned = true
			} else {
				rep.Warning = fmt.Sprintf("pin not supported by containerd %s (needs 1.7 or later)", r.Version)
			}
		}
		for _, name := range want.RetagAs {
			if err := r.tag(ctx, img, name, rep.Pinned); err != nil {
				return report, fmt.Errorf("retag %s as %s: %w", want.Ref, name, err)
			}
			rep.Retags = append(rep.Retags, name)
		}
		report.Images = append(report.Images, rep)
	}
	return report, nil
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
		for _, name := range want.RetagAs {
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
		names := append([]string{want.Ref}, want.RetagAs...)
		if r.anyInUse(ctx, names, inUse) {
			for _, n := range names {
				report.Kept[n] = "in use by a running container"
			}
			continue
		}
		for _, n := range names {
			if err := is.Delete(ctx, n); err != nil && !errdefs.IsNotFound(err) {
				return report, fmt.Errorf("remove %s: %w", n, err)
			}
			report.Removed = append(report.Removed, n)
		}
	}
	return report, nil
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
	snapshotter, err := r.criSnapshotter(ctx)
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
