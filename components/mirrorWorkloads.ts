// MirrorWorkloads: a stack transform that pins the container images of @pulumi/kubernetes
// workloads (Pods and everything that templates Pods) to a mirror registry. Each distinct source
// image becomes one MirroredImage child, shared by every workload that names it; the workload's
// `image` becomes the child's `host/repo@sha256:…` and the workload depends on the child, so
// pods start only once the mirror holds what they run. The transform goes through the engine
// (registerResourceTransform), so it also reaches workloads that multi-language components
// (yaml/v2 ConfigGroup, helm/v4 Chart) register from inside their provider.
import * as pulumi from "@pulumi/pulumi";
import { formatReference, parseReference, type ImageReference } from "../provider/oci/reference";
import { MirroredImage } from "../provider/resources/mirroredImage";
import { childName, ImageyardComponent, InputPropertyError } from "./component";
import { mirrorArgs, mirrorTarget, parseRegistry, type MirrorOptions } from "./mirrorOptions";
import { imageKey } from "./registryPreload";
import { CONTAINER_LISTS, POD_SPEC_PATHS } from "./workloadImages";

export interface MirrorWorkloadsArgs extends MirrorOptions {
  /** The mirror, "registry.example.com[:port][/prefix]": repository paths are kept under it. */
  registry: string;
  /**
   * Where to fetch a registry's images from instead of the registry itself, by registry name:
   * `{ "docker.io": "dockerhub-cache.internal:5000" }` (a pull-through cache, an air-gap copy).
   * Workloads keep naming the registry; the mirror paths follow the name, not the fetch host.
   */
  upstreams?: Record<string, string>;
  /** Images left as written: an exact reference as the workload names it, or a registry name ("registry.k8s.io"). */
  exclude?: string[];
  /**
   * Apply to every resource the stack registers after this component (default true). With false,
   * pass `transform` in the `transforms` option of the resources (or components) to pin.
   */
  stackTransform?: boolean;
}

/** A Kubernetes type token's kind when it templates Pods: "kubernetes:apps/v1:DeploymentPatch" → "Deployment". */
export function workloadKind(type: string): string | undefined {
  const m = /^kubernetes:[\w.-]+\/[\w.-]+:([A-Za-z]+?)(?:Patch)?$/.exec(type);
  return m && POD_SPEC_PATHS[m[1]!] ? m[1] : undefined;
}

/** One container image a rewrite visits: the image as written and where it sits ("spec.template.spec.containers[0].image"). */
export interface ImageSite {
  image: string;
  path: string;
}

/**
 * `props` with each container image replaced by what `replace` returns for it (undefined keeps
 * it). Copy-on-write: objects off the changed paths are shared with the input, and values that
 * are not strings (unknown in a preview, secret) are left alone.
 */
export function rewritePodImages(
  kind: string,
  props: Record<string, unknown>,
  replace: (site: ImageSite) => pulumi.Input<string> | undefined,
): { props: Record<string, unknown>; changed: ImageSite[] } {
  const path = POD_SPEC_PATHS[kind];
  if (!path) return { props, changed: [] };
  const changed: ImageSite[] = [];
  const rewriteSpec = (spec: Record<string, unknown>, at: string): Record<string, unknown> => {
    let out = spec;
    for (const list of CONTAINER_LISTS) {
      const containers = spec[list];
      if (!Array.isArray(containers)) continue;
      let copy: unknown[] | undefined;
      containers.forEach((c, i) => {
        if (!isRecord(c) || typeof c.image !== "string" || c.image === "") return;
        const site = { image: c.image, path: `${at}.${list}[${i}].image` };
        const image = replace(site);
        if (image === undefined) return;
        changed.push(site);
        copy ??= [...containers];
        copy[i] = { ...c, image };
      });
      if (copy) out = { ...out, [list]: copy };
    }
    return out;
  };
  const walk = (obj: Record<string, unknown>, i: number, at: string): Record<string, unknown> => {
    if (i === path.length) return rewriteSpec(obj, at);
    const key = path[i]!;
    const child = obj[key];
    if (!isRecord(child)) return obj;
    const next = walk(child, i + 1, at ? `${at}.${key}` : key);
    return next === child ? obj : { ...obj, [key]: next };
  };
  return { props: walk(props, 0, ""), changed };
}

const NAME = "MirrorWorkloads";

export class MirrorWorkloads extends ImageyardComponent {
  /** source image (normalised, "docker.io/library/busybox:1.36") → its MirroredImage; filled as workloads register. */
  readonly mirrors = new Map<string, MirroredImage>();
  /** The transform itself, for the `transforms` option when `stackTransform` is false. */
  readonly transform: pulumi.ResourceTransform;
  private readonly keys = new Map<string, string>();

  constructor(
    private readonly componentName: string,
    private readonly args: MirrorWorkloadsArgs,
    opts?: pulumi.ComponentResourceOptions,
  ) {
    super(NAME, componentName, opts);
    if (!args.registry) throw new InputPropertyError(NAME, "registry", 'give the mirror registry, e.g. "registry.example.com:5000/mirror"');
    try {
      parseReference(`${parseRegistry(args.registry).host}/x`);
    } catch (e) {
      throw new InputPropertyError(NAME, "registry", (e as Error).message);
    }
    for (const [from, to] of Object.entries(args.upstreams ?? {})) {
      try {
        parseReference(`${to}/x`);
      } catch (e) {
        throw new InputPropertyError(NAME, `upstreams.${from}`, `${to} is not a registry host: ${(e as Error).message}`);
      }
    }
    this.transform = (a) => this.apply(a);
    if (args.stackTransform !== false) pulumi.runtime.registerResourceTransform(this.transform);
    this.registerOutputs({ registry: args.registry });
  }

  private apply(a: pulumi.ResourceTransformArgs): pulumi.ResourceTransformResult | undefined {
    const kind = a.custom ? workloadKind(a.type) : undefined;
    if (!kind) return undefined;
    const used: MirroredImage[] = [];
    const { props, changed } = rewritePodImages(kind, a.props as Record<string, unknown>, (site) => {
      const m = this.mirrorFor(site.image, `${kind}/${a.name} ${site.path}`);
      if (m && !used.includes(m)) used.push(m);
      return m?.pinnedRef;
    });
    if (changed.length === 0) return undefined;
    return { props, opts: { ...a.opts, dependsOn: withDependencies(a.opts.dependsOn, used) } };
  }

  /** The MirroredImage serving `image`, made on first use; undefined when the image stays as written. */
  private mirrorFor(image: string, where: string): MirroredImage | undefined {
    if (this.args.exclude?.includes(image)) return undefined;
    let ref: ImageReference;
    try {
      ref = parseReference(image);
    } catch (e) {
      throw new InputPropertyError(NAME, where, (e as Error).message);
    }
    const mirror = parseRegistry(this.args.registry);
    if (this.args.exclude?.includes(ref.registry)) return undefined;
    if (ref.registry === mirror.host && (mirror.prefix === "" || ref.repository.startsWith(`${mirror.prefix}/`))) return undefined;
    const source = formatReference(ref);
    const known = this.mirrors.get(source);
    if (known) return known;
    const key = imageKey(source);
    const other = this.keys.get(key);
    if (other !== undefined)
      throw new InputPropertyError(NAME, where, `${source} and ${other} give the same child name ${key}; exclude one`);
    this.keys.set(key, source);
    const upstream = this.args.upstreams?.[ref.registry];
    const m = new MirroredImage(
      childName(this.componentName, key),
      {
        source: upstream ? formatReference({ ...ref, registry: upstream }) : source,
        target: mirrorTarget(source, this.args.registry),
        ...mirrorArgs(this.args),
      },
      this.childOptions(),
    );
    this.mirrors.set(source, m);
    return m;
  }
}

/** `dependsOn` (any of the shapes the option takes) plus `more`. */
function withDependencies(deps: pulumi.ResourceOptions["dependsOn"], more: pulumi.Resource[]): pulumi.ResourceOptions["dependsOn"] {
  if (deps === undefined) return more;
  if (Array.isArray(deps)) return [...deps, ...more];
  if (pulumi.Resource.isInstance(deps)) return [deps, ...more];
  return pulumi.output(deps as pulumi.Input<pulumi.Resource | pulumi.Resource[]>).apply((d) => [...(Array.isArray(d) ? d : [d]), ...more]);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !pulumi.Output.isInstance(v);
}
