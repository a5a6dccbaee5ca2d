// Serializes the test files that use the Kubernetes test bed (see holdK8sBed for why).
import { afterAll, beforeAll } from "vitest";
import { holdK8sBed } from "../testbed/k8s";

/** Call at the top of a test file, before its own hooks: it waits for the bed, then holds it to the end of the file. */
export function holdK8sBedForThisFile(): void {
  let release: (() => void) | undefined;
  beforeAll(async () => {
    release = await holdK8sBed();
  }, 2_400_000);
  afterAll(() => release?.());
}
