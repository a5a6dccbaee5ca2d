// The URN a dynamic resource will have, passed to its provider as an input (see URN_KEY in
// forward.ts) so the provider's progress can show in the resource's own row.
import * as pulumi from "@pulumi/pulumi";
import { URN_KEY } from "./forward";

export function urnInput(typeName: string, name: string, opts: pulumi.CustomResourceOptions | undefined): Record<string, pulumi.Output<string>> {
  return { [URN_KEY]: pulumi.createUrn(name, `pulumi-nodejs:dynamic/imageyard:${typeName}`, opts?.parent) };
}
