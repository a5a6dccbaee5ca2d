// The URN a dynamic resource will have, passed to its provider as an input (see URN_KEY in
// forward.ts) so the provider's progress can show in the resource's own row.
import * as pulumi from "@pulumi/pulumi";
import { URN_KEY } from "./forward";

export function urnInput(typeName: string, name: string, opts: pulumi.CustomResourceOptions | undefined): Record<string, pulumi.Output<string>> {
  const urn = pulumi.createUrn(name, `pulumi-nodejs:dynamic/imageyard:${typeName}`, opts?.parent);
  // Only the value, not createUrn's dependency on the parent: depending on a component means
  // waiting for all of its children, so two children of one component would wait for each other
  // forever. (A URN is known in preview too, so the promise always settles.)
  return { [URN_KEY]: pulumi.output(new Promise<string>((resolve) => urn.apply(resolve))) };
}
