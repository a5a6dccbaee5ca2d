// The URN a dynamic resource will have, passed to its provider as an input (see URN_KEY in
// forward.ts) so the provider's progress can show in the resource's own row.
import * as pulumi from "@pulumi/pulumi";
import { URN_KEY } from "./forward";

export function urnInput(
  typeName: string,
  name: string,
  opts: pulumi.CustomResourceOptions | undefined,
): Record<string, pulumi.Input<string>> {
  const urn = pulumi.createUrn(name, `pulumi-nodejs:dynamic/imageyard:${typeName}`, opts?.parent);
  // A plain promise, not the Output: createUrn's Output lists the parent as a dependency, and a
  // dependency on a component waits for all its children, this one included. Under a component
  // with two or more children that cycle never resolves ("waiting for the URNs of its dependencies").
  return { [URN_KEY]: new Promise<string>((ok) => urn.apply(ok)) };
}
