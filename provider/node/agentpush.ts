// Puts the bundled agent image into a registry the nodes can pull from, with the copy engine
// (an up-to-date copy is two HEADs), and answers repository@digest for the DaemonSet.
import { lineProgress } from "../http/progress";
import { copyImage } from "../oci/copy";
import type { RegistryOptions } from "../oci/registry";
import { AGENT_TAG, agentLayout, agentRepository } from "./agentimage";
import type { Credentials } from "./images";

export interface AgentRegistryTls {
  insecure?: boolean;
  caCert?: string;
  certDir?: string;
}

export async function ensureAgentImage(
  registry: string,
  auth: Credentials | undefined,
  tls: AgentRegistryTls | undefined,
  log: (line: string) => void,
): Promise<string> {
  const layout = await agentLayout();
  const repo = agentRepository(registry);
  const options: RegistryOptions = { credentialsInput: "agentRegistryAuth" };
  if (auth) options.credentials = { username: auth.username, password: auth.password };
  if (tls?.caCert || tls?.insecure)
    options.tls = { ...(tls.caCert ? { ca: [tls.caCert] } : {}), ...(tls.insecure ? { insecure: true } : {}) };
  if (tls?.certDir) options.certDir = tls.certDir;
  // The tag names the content, so two provider versions never fight over one tag.
  const tag = `${AGENT_TAG}-${layout.digest.slice("sha256:".length, "sha256:".length + 12)}`;
  const result = await copyImage(
    { source: `oci:${layout.dir}:${AGENT_TAG}`, target: `${repo}:${tag}`, copySignatures: false, targetOptions: options },
    { onProgress: lineProgress(log) },
  );
  return result.pinnedRef;
}
