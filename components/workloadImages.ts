// Container images named by Kubernetes YAML (files, directories, multi-document streams, rendered
// Helm output): containers, initContainers and ephemeralContainers of Pods and of every workload
// that templates Pods. Reading the list a component was given is the only I/O here.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { InputPropertyError } from "./component";

export interface FoundImage {
  image: string;
  /** "deploy/app.yaml#2 Deployment/web container api" */
  usedBy: string[];
}

export const POD_SPEC_PATHS: Record<string, string[]> = {
  Pod: ["spec"],
  Deployment: ["spec", "template", "spec"],
  DaemonSet: ["spec", "template", "spec"],
  StatefulSet: ["spec", "template", "spec"],
  ReplicaSet: ["spec", "template", "spec"],
  ReplicationController: ["spec", "template", "spec"],
  Job: ["spec", "template", "spec"],
  CronJob: ["spec", "jobTemplate", "spec", "template", "spec"],
  PodTemplate: ["template", "spec"],
};
export const CONTAINER_LISTS = ["initContainers", "containers", "ephemeralContainers"];

/** Every YAML/JSON file under the given files and directories, in a stable order. */
export function manifestFiles(paths: string[], component: string): string[] {
  const out: string[] = [];
  paths.forEach((p, i) => {
    let s: ReturnType<typeof statSync>;
    try {
      s = statSync(p);
    } catch (e) {
      throw new InputPropertyError(component, `files[${i}]`, `cannot read ${p}: ${(e as Error).message}`);
    }
    if (s.isDirectory()) out.push(...walk(p));
    else out.push(p);
  });
  return out;
}

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .sort((a, b) => (a.name < b.name ? -1 : 1))
    .flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : /\.(ya?ml|json)$/.test(e.name) ? [join(dir, e.name)] : []));
}

/** Images of one YAML stream; `label` names it in errors ("files[0] (app.yaml)", "manifests[1]"). */
export function imagesOfYaml(
  text: string,
  label: string,
  component: string,
  into = new Map<string, FoundImage>(),
): Map<string, FoundImage> {
  const docs = parseAllDocuments(text);
  docs.forEach((doc, n) => {
    if (doc.errors.length > 0)
      throw new InputPropertyError(component, label, `document ${n + 1} is not valid YAML: ${doc.errors[0]!.message}`);
    collect(doc.toJS(), `${label}#${n + 1}`, into);
  });
  return into;
}

function collect(obj: unknown, where: string, into: Map<string, FoundImage>): void {
  if (!isRecord(obj)) return;
  if (Array.isArray(obj.items)) for (const item of obj.items) collect(item, where, into); // kind: List, `kubectl get -o yaml`
  const path = typeof obj.kind === "string" ? POD_SPEC_PATHS[obj.kind] : undefined;
  if (!path) return;
  let spec: unknown = obj;
  for (const k of path) spec = isRecord(spec) ? spec[k] : undefined;
  if (!isRecord(spec)) return;
  const name = isRecord(obj.metadata) && typeof obj.metadata.name === "string" ? obj.metadata.name : "?";
  for (const list of CONTAINER_LISTS) {
    const containers = spec[list];
    if (!Array.isArray(containers)) continue;
    for (const c of containers) {
      if (!isRecord(c) || typeof c.image !== "string" || c.image === "") continue;
      const found = into.get(c.image) ?? { image: c.image, usedBy: [] };
      found.usedBy.push(`${where} ${obj.kind}/${name} ${list.replace(/s$/, "")} ${String(c.name ?? "?")}`);
      into.set(c.image, found);
    }
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Files and YAML texts → images in first-seen order. */
export function collectWorkloadImages(files: string[], manifests: string[], component: string): FoundImage[] {
  const found = new Map<string, FoundImage>();
  const list = manifestFiles(files, component);
  for (const f of list) {
    const i = files.indexOf(f);
    imagesOfYaml(readFileSync(f, "utf8"), i >= 0 ? `files[${i}] (${f})` : `files (${f})`, component, found);
  }
  for (const [i, text] of manifests.entries()) imagesOfYaml(text, `manifests[${i}]`, component, found);
  return [...found.values()];
}
