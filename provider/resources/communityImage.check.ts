// CommunityImage's check(): offline validation of every input (each message names the property,
// what is wrong and a right example), then what only the network can tell, so a preview already
// fails where an up would: the checksumUrl's entry, the size the source's header declares against
// maxVirtualSize, and one Keystone token for the credentials.
import { createHash } from "node:crypto";
import { checkTimeouts, timeoutSeconds } from "./timeouts";
import { compact, isUnknown, type CheckFailure } from "./diff";
import { checkImageSource, DEFAULT_MAX_VIRTUAL_SIZE, isUnverified, resolveChecksum } from "../disk/source";
import { DISK_FORMATS } from "../disk/qemu";
import { resolveCloud } from "../glance/clouds";
import { CORE_ATTRIBUTES, CONTAINER_FORMATS, VISIBILITIES, type Visibility } from "../glance/images";
import { KeystoneSession } from "../glance/keystone";
import { REQUEST_KEY_PROPERTY, RUN_PROPERTY, SOURCE_CHECKSUM_PROPERTY } from "../glance/publish";
import { checkImmutableSource } from "./communityImage.immutable";
import { PREFLIGHT_TIMEOUT_MS, previewSource, transient } from "./communityImage.preview";
import { validateMembers } from "./communityImage.members";
import type { CommunityDeps, CommunityImageInputs, CredentialsInput } from "./communityImage.lifecycle";

const NAME_MAX = 255;
const IMPORT_METHODS = ["upload", "glance-direct", "web-download"] as const;
const RESERVED = new Set([...CORE_ATTRIBUTES, REQUEST_KEY_PROPERTY, RUN_PROPERTY, SOURCE_CHECKSUM_PROPERTY]);

export async function checkCommunityImage(
  olds: Partial<CommunityImageInputs>,
  news: CommunityImageInputs,
  deps: CommunityDeps = {},
): Promise<{ inputs: CommunityImageInputs; failures: CheckFailure[] }> {
  const log = deps.log ?? ((line: string) => console.log(line));
  const failures = [...validateCommunityImage(news), ...validateMembers(news)];
  const inputs = normalizeInputs(news);
  if (failures.length > 0 || isUnknown(news.source)) return { inputs, failures };
  const allowLocalFiles = news.allowLocalFiles === true;
  if (isUnverified(news.source))
    log(
      `warning: ${news.name}: source.checksum is "unverified": the download of ${news.source.url} will not be checked against a published checksum`,
    );
  if (news.source.checksumUrl !== undefined) {
    const sameSource =
      olds.source?.url === news.source.url && olds.source?.checksumUrl === news.source.checksumUrl && olds.resolvedChecksum !== undefined;
    try {
      const c = await resolveChecksum(news.source, { allowLocalFiles, signal: AbortSignal.timeout(PREFLIGHT_TIMEOUT_MS) });
      if (c) inputs.resolvedChecksum = `${c.algo}:${c.value}`;
    } catch (e) {
      // A SUMS host that is down must not break every preview of an existing image.
      if (sameSource && transient(e)) {
        log(`warning: ${(e as Error).message}; keeping ${olds.resolvedChecksum}`);
        inputs.resolvedChecksum = olds.resolvedChecksum;
      } else {
        return { inputs, failures: [{ property: "source.checksumUrl", reason: (e as Error).message }] };
      }
    }
  }
  failures.push(...checkImmutableSource(olds, inputs));
  if (deps.preflight !== false && failures.length === 0)
    failures.push(
      ...(await previewSource(
        olds,
        inputs,
        isUnknown(news.maxVirtualSize) ? undefined : (parseSize(news.maxVirtualSize) ?? DEFAULT_MAX_VIRTUAL_SIZE),
        log,
      )),
      ...(await checkCredentials(news, log)),
    );
  return { inputs, failures };
}

// Credentials proven good in this process (a stack of many images asks Keystone once).
const goodCredentials = new Set<string>();

/** One token request, so wrong credentials fail the preview instead of the up. */
async function checkCredentials(news: CommunityImageInputs, log: (l: string) => void): Promise<CheckFailure[]> {
  if (isUnknown(news.cloud) || isUnknown(news.credentials) || Object.values(news.credentials ?? {}).some(isUnknown)) return [];
  const property = news.cloud && news.credentials === undefined ? "cloud" : "credentials";
  let auth: ReturnType<typeof resolveCloud>["auth"];
  try {
    auth = resolveCloud({ ...(news.cloud ? { cloud: news.cloud } : {}), explicit: news.credentials ?? {} }).auth;
  } catch (e) {
    return [{ property, reason: (e as Error).message }];
  }
  const key = createHash("sha256").update(JSON.stringify(auth)).digest("hex");
  if (goodCredentials.has(key)) return [];
  try {
    await new KeystoneSession(auth, { signal: AbortSignal.timeout(PREFLIGHT_TIMEOUT_MS) }).endpoint("image");
    goodCredentials.add(key);
    return [];
  } catch (e) {
    if (transient(e)) {
      log(
        `warning: ${news.name}: could not reach Keystone during check (${(e as Error).message}); the credentials are tried again at create`,
      );
      return [];
    }
    return [{ property, reason: (e as Error).message }];
  }
}

/** Bytes from a number or "64GiB" / "500MiB" / "2TB" / "1.5G" (binary units; kB/MB/GB/TB decimal). */
export function parseSize(v: unknown): number | undefined {
  if (typeof v === "number") return Number.isSafeInteger(v) && v > 0 ? v : undefined;
  if (typeof v !== "string") return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(|b|k|kib|m|mib|g|gib|t|tib|kb|mb|gb|tb)\s*$/i.exec(v);
  if (!m) return undefined;
  const unit = (m[2] as string).toLowerCase();
  const pow: Record<string, number> = {
    "": 1,
    b: 1,
    k: 1024,
    kib: 1024,
    m: 1024 ** 2,
    mib: 1024 ** 2,
    g: 1024 ** 3,
    gib: 1024 ** 3,
    t: 1024 ** 4,
    tib: 1024 ** 4,
    kb: 1e3,
    mb: 1e6,
    gb: 1e9,
    tb: 1e12,
  };
  const n = Math.round(Number(m[1]) * (pow[unit] as number));
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

function normalizeInputs(news: CommunityImageInputs): CommunityImageInputs {
  const inputs: CommunityImageInputs = { ...news };
  delete inputs.resolvedChecksum;
  if (news.properties && !isUnknown(news.properties)) {
    inputs.properties = Object.fromEntries(Object.entries(news.properties).map(([k, v]) => [k, typeof v === "string" ? v : String(v)]));
  }
  return compact(inputs);
}

const PROP_EXAMPLE = 'e.g. { os_distro: "debian", os_version: "12", hw_disk_bus: "scsi" }';

/** Offline validation: each message names the property, what is wrong, and a right example. */
export function validateCommunityImage(n: Partial<CommunityImageInputs>): CheckFailure[] {
  const failures: CheckFailure[] = [];
  const fail = (property: string, reason: string) => failures.push({ property, reason });
  const known = (v: unknown) => v !== undefined && !isUnknown(v);
  if (typeof n.name !== "string" || n.name.trim() === "") fail("name", 'name is required, e.g. "Debian 12 (20240717)"');
  else if (n.name.length > NAME_MAX) fail("name", `name has ${n.name.length} characters; Glance allows ${NAME_MAX}`);
  if (n.source === undefined || n.source === null || typeof n.source !== "object") {
    fail(
      "source",
      'source is required, e.g. { url: "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.qcow2", checksumUrl: "https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS" }',
    );
  } else if (!isUnknown(n.source)) {
    const allowLocalFiles = n.allowLocalFiles === true;
    for (const p of checkImageSource(n.source, isUnknown(n.diskFormat) ? undefined : n.diskFormat, {
      allowLocalFiles,
      requireChecksum: true,
    })) {
      fail(
        p.startsWith("diskFormat")
          ? "diskFormat"
          : p.startsWith("source.checksum or")
            ? "source.checksum"
            : p.startsWith("source.mirrorUrl")
              ? "source.mirrorUrl"
              : "source",
        p,
      );
    }
  }
  if (n.diskFormat === undefined)
    fail("diskFormat", `diskFormat is required: one of ${DISK_FORMATS.join(", ")}, e.g. "raw" for Ceph-backed clouds, else "qcow2"`);
  else if (!isUnknown(n.diskFormat) && !DISK_FORMATS.includes(n.diskFormat) && (n.source === undefined || isUnknown(n.source))) {
    fail("diskFormat", `diskFormat "${n.diskFormat}" is not one of ${DISK_FORMATS.join(", ")}`);
  }
  if (known(n.containerFormat) && !(CONTAINER_FORMATS as readonly string[]).includes(n.containerFormat as string)) {
    fail("containerFormat", `containerFormat "${n.containerFormat}" is not one of ${CONTAINER_FORMATS.join(", ")}; disk images use "bare"`);
  }
  if (known(n.visibility) && !VISIBILITIES.includes(n.visibility as Visibility)) {
    fail(
      "visibility",
      `visibility "${n.visibility}" is not one of ${VISIBILITIES.join(", ")} (community: usable by every project by ID, not listed by default)`,
    );
  }
  for (const k of ["minDisk", "minRam"] as const) {
    const v = n[k];
    if (known(v) && !(Number.isInteger(v) && (v as number) >= 0))
      fail(k, `${k} must be a whole number ≥ 0 (${k === "minDisk" ? "GiB, e.g. 8" : "MiB, e.g. 512"}), not ${JSON.stringify(v)}`);
  }
  if (known(n.properties)) {
    if (typeof n.properties !== "object" || n.properties === null || Array.isArray(n.properties))
      fail("properties", `properties must be a map of strings, ${PROP_EXAMPLE}`);
    else
      for (const [k, v] of Object.entries(n.properties)) {
        if (RESERVED.has(k) || k.startsWith("os_glance_"))
          fail(
            `properties.${k}`,
            `"${k}" is a Glance attribute or one imageyard sets itself; use the resource's own input (name, minDisk, tags, …) or another key`,
          );
        else if (k.length > 255) fail(`properties.${k.slice(0, 20)}…`, "property names are at most 255 characters");
        else if (!["string", "number", "boolean"].includes(typeof v) && !isUnknown(v))
          fail(`properties.${k}`, `property values are strings (numbers and booleans are converted), not ${typeof v}; ${PROP_EXAMPLE}`);
      }
  }
  if (known(n.tags)) {
    if (!Array.isArray(n.tags) || n.tags.some((t) => typeof t !== "string" || t === "" || t.length > 255))
      fail("tags", 'tags must be a list of non-empty strings, e.g. ["debian", "imageyard"]');
  }
  if (known(n.maxVirtualSize) && parseSize(n.maxVirtualSize as number | string) === undefined) {
    fail(
      "maxVirtualSize",
      `maxVirtualSize must be a size in bytes or with a unit, e.g. 68719476736 or "64GiB" or "500MiB", not ${JSON.stringify(n.maxVirtualSize)}`,
    );
  }
  for (const k of ["protected", "hidden", "active", "keepOnFailure", "allowLocalFiles"] as const) {
    if (known(n[k]) && typeof n[k] !== "boolean") fail(k, `${k} must be true or false`);
  }
  if (known(n.importMethod) && !IMPORT_METHODS.includes(n.importMethod as (typeof IMPORT_METHODS)[number])) {
    fail(
      "importMethod",
      `importMethod "${n.importMethod}" is not one of upload (download, verify and convert here, then upload), glance-direct (the same, then stage + import), web-download (Glance fetches the URL itself)`,
    );
  }
  if (
    known(n.importRetries) &&
    !(Number.isInteger(n.importRetries) && (n.importRetries as number) >= 0 && (n.importRetries as number) <= 10)
  )
    fail(
      "importRetries",
      `importRetries must be a whole number from 0 to 10 (how often a stuck import is started again), e.g. 2, not ${JSON.stringify(n.importRetries)}`,
    );
  if (known(n.importTimeout) && timeoutSeconds(n.importTimeout) === undefined)
    fail(
      "importTimeout",
      `importTimeout must be a positive number of seconds or a duration like "90s", "20m", "1h" (an import not active by then is stuck), not ${JSON.stringify(n.importTimeout)}`,
    );
  if (n.importMethod === "web-download" && n.source && !isUnknown(n.source)) {
    for (const k of ["url", "mirrorUrl"] as const)
      if (typeof n.source[k] === "string" && !/^https?:\/\//i.test(n.source[k] as string))
        fail(`source.${k}`, "web-download needs an http(s) URL Glance can reach; a file: URL only works with importMethod upload");
    if (n.source.compression !== undefined && n.source.compression !== "none")
      fail("source.compression", "Glance's web-download does not decompress; use importMethod upload for compressed sources");
    const from = n.source.format ?? n.diskFormat;
    if (known(n.diskFormat) && from !== n.diskFormat && n.diskFormat !== "raw") {
      fail(
        "diskFormat",
        `web-download converts only to Glance's image_conversion output format (raw); for ${from} → ${n.diskFormat} use importMethod upload`,
      );
    }
  }
  if (known(n.buildDate) && !/^\d{4}-\d{2}-\d{2}$/.test(String(n.buildDate)))
    fail("buildDate", `buildDate must be YYYY-MM-DD, e.g. "2024-07-17", not "${n.buildDate}"`);
  if (known(n.cloud) && (typeof n.cloud !== "string" || n.cloud === ""))
    fail("cloud", 'cloud must be the name of an entry in clouds.yaml, e.g. "openstack"');
  if (known(n.credentials)) {
    const c = n.credentials as CredentialsInput;
    if (typeof c !== "object" || c === null)
      fail(
        "credentials",
        'credentials must be an object, e.g. { authUrl: "https://keystone:5000/v3", username: "demo", password: cfg.requireSecret("osPassword"), projectName: "demo" }',
      );
    else {
      if (c.password !== undefined && c.applicationCredentialSecret !== undefined)
        fail("credentials", "credentials has both password and applicationCredentialSecret; give one way to authenticate");
      if (
        c.applicationCredentialSecret !== undefined &&
        c.applicationCredentialId === undefined &&
        c.applicationCredentialName === undefined
      )
        fail(
          "credentials.applicationCredentialId",
          "an application credential needs applicationCredentialId (or applicationCredentialName with username)",
        );
    }
  }
  for (const f of checkTimeouts(n.timeouts)) fail(f.property, f.reason);
  if (failures.length === 0 && !isUnknown(n.cloud) && !isUnknown(n.credentials)) {
    try {
      resolveCloud({ ...(n.cloud ? { cloud: n.cloud } : {}), explicit: n.credentials ?? {} });
    } catch (e) {
      fail(n.cloud ? "cloud" : "credentials", (e as Error).message);
    }
  }
  return failures;
}
