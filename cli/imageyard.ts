#!/usr/bin/env node
// `imageyard copy|plan|inspect|verify-mirror-use`: maps flags onto the engines. The digest (or
// JSON) goes to stdout so scripts can capture it; progress and errors go to stderr.
import "./startup";
import { isImageyardError } from "../provider/http/errors";
import { lineProgress } from "../provider/http/progress";
import { copyImage, inspectImage, planCopy, summarizePlan, withDeadline, type CopyPlan } from "../provider/oci/copy";
import { parseCommand, secretsOf, UsageError, USAGE } from "./args";

/** A copy without --timeout still ends: the same hour a MirroredImage gets by default. */
const DEFAULT_TIMEOUT_MS = 3600_000;

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  signal?: AbortSignal;
}

const defaultIo: CliIo = { stdout: (t) => process.stdout.write(t), stderr: (t) => process.stderr.write(t) };

/** Runs one command; resolves to the exit status. */
export async function main(argv: string[], realIo: CliIo = defaultIo): Promise<number> {
  // Whatever says it, no password typed on the command line is printed back.
  const secrets = secretsOf(argv);
  const scrub = (t: string) => secrets.reduce((acc, s) => acc.split(s).join("***"), t);
  const io: CliIo = { ...realIo, stdout: (t) => realIo.stdout(scrub(t)), stderr: (t) => realIo.stderr(scrub(t)) };
  let cmd: ReturnType<typeof parseCommand>;
  try {
    cmd = parseCommand(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    io.stderr(`imageyard: ${e.message}\n\n${USAGE}\n`);
    return 2;
  }
  try {
    switch (cmd.kind) {
      case "help":
        io.stdout(`${USAGE}\n`);
        return 0;
      case "version":
        io.stdout(`${(require("imageyard/package.json") as { version: string }).version}\n`);
        return 0;
      case "inspect": {
        const info = await inspectImage(cmd.ref, cmd.options);
        if (!info) {
          io.stderr(`imageyard: inspect ${cmd.ref}: manifest not found (404 MANIFEST_UNKNOWN). Check the tag and repository name.\n`);
          return 1;
        }
        io.stdout(cmd.json ? `${JSON.stringify(info, null, 2)}\n` : `${info.digest}\n`);
        return 0;
      }
      case "verify-mirror-use": {
        // Loaded here: kubeconfig's exec plugins need node:child_process, which a copy never loads.
        const { describeOffenders, verifyMirrorUse } = await import("../provider/node/mirrorUse");
        const report = await verifyMirrorUse(cmd.options);
        const offenders = describeOffenders(report);
        if (cmd.json) io.stdout(`${JSON.stringify(report, null, 2)}\n`);
        else for (const line of offenders) io.stdout(`${line}\n`);
        const bad = new Set(report.containers.filter((c) => c.reason !== undefined).map((c) => `${c.namespace}/${c.pod}`)).size;
        const verdict = report.ok
          ? "all from the mirror"
          : `${count(offenders.length, "container")} in ${count(bad, "pod")} not served from the mirror as required`;
        io.stderr(`${count(report.pods, "pod")}, ${count(report.containers.length, "container")}: ${verdict}\n`);
        return report.ok ? 0 : 1;
      }
      case "plan":
      case "copy": {
        const deps = {
          ...(cmd.quiet ? {} : { onProgress: lineProgress((line) => io.stderr(`${line}\n`)) }),
          ...(io.signal ? { signal: io.signal } : {}),
          timeoutMs: cmd.timeoutMs ?? DEFAULT_TIMEOUT_MS,
        };
        if (cmd.kind === "plan") {
          const plan = await withDeadline(cmd.request, deps, (d) => planCopy(cmd.request, d));
          io.stdout(cmd.json ? `${JSON.stringify(planJson(plan), null, 2)}\n` : describePlan(plan));
          return 0;
        }
        const result = await copyImage(cmd.request, deps);
        if (!cmd.quiet && !result.upToDate)
          io.stderr(
            `${result.tagRef}: ${result.blobsCopied} blobs copied, ${result.blobsMounted} mounted, ${result.blobsSkipped} already there\n`,
          );
        io.stdout(cmd.json ? `${JSON.stringify(result, null, 2)}\n` : `${result.digest}\n`);
        return 0;
      }
    }
  } catch (e) {
    const code = isImageyardError(e) ? ` [${e.code}]` : "";
    io.stderr(`imageyard: ${e instanceof Error ? e.message : String(e)}${code}\n`);
    return 1;
  }
}

const count = (n: number, noun: string) => `${n} ${noun}${n === 1 ? "" : "s"}`;

/** The plan without manifest bytes (they are for the executor, not for people). */
function planJson(plan: CopyPlan): unknown {
  return { ...plan, manifests: plan.manifests.map(({ bytes: _bytes, ...m }) => m) };
}

function describePlan(plan: CopyPlan): string {
  const lines = [`${plan.source} → ${plan.tagRef}`, `  ${summarizePlan(plan)}`];
  for (const b of plan.blobs)
    lines.push(`  blob ${b.digest} ${String(b.size).padStart(12)} ${b.action}${b.mountFrom ? ` from ${b.mountFrom}` : ""}`);
  for (const m of plan.manifests)
    lines.push(`  manifest ${m.digest} ${m.role}${m.platform ? ` ${m.platform}` : ""}${m.tag ? ` :${m.tag}` : ""} ${m.action}`);
  return `${lines.join("\n")}\n`;
}

if (require.main === module) {
  const controller = new AbortController();
  process.once("SIGINT", () => controller.abort());
  process.once("SIGTERM", () => controller.abort());
  void main(process.argv.slice(2), { ...defaultIo, signal: controller.signal }).then(
    (status) => {
      // Idle keep-alive sockets would hold the process ~0.1 s after the work is done (a third
      // of a no-op copy); stdout and stderr are synchronous for files, pipes and terminals here.
      process.exit(status);
    },
    (e: unknown) => {
      process.stderr.write(`imageyard: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
