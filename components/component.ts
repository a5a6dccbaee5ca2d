// The one convention every imageyard ComponentResource follows (the pulumi-awsx model):
// - type token `imageyard:index:<Name>`;
// - every child is created with `{ parent: this }` (childOptions), so it moves, protects and
//   deletes with the component and shows under it in `pulumi preview`;
// - child names are `${name}-${key}` (childName): stable per list key, so editing one entry of a
//   catalog or manifest never renames the others;
// - `registerOutputs` is called last, with the maps users wire into other stacks;
// - bad input throws InputPropertyError naming the property path (`images.app.retagAs`), before
//   any child exists, so preview fails with it.
// A component does no I/O beyond reading the list it was given: the work happens in resources.
import * as pulumi from "@pulumi/pulumi";
import { ImageyardError } from "../provider/http/errors";

/** Input error that names the offending property path of a component's arguments. */
export class InputPropertyError extends ImageyardError {
  readonly propertyPath: string;
  constructor(component: string, propertyPath: string, reason: string) {
    super("INVALID_INPUT", `${component}: ${propertyPath}: ${reason}`);
    this.propertyPath = propertyPath;
  }
}

/** The name of a component's child for one list key. */
export function childName(componentName: string, key: string): string {
  return `${componentName}-${key}`;
}

/** Base class: fixes the type token and the child options. */
export abstract class ImageyardComponent extends pulumi.ComponentResource {
  protected constructor(typeName: string, name: string, opts?: pulumi.ComponentResourceOptions) {
    super(`imageyard:index:${typeName}`, name, {}, opts);
  }

  /** Options for a child: parented to this component, plus anything the caller adds. */
  protected childOptions(extra?: pulumi.CustomResourceOptions): pulumi.CustomResourceOptions {
    return { ...extra, parent: this };
  }
}
