// The one dynamic provider every imageyard resource uses: each method loads the resource's engine
// module by the package's own name at call time and forwards to its `lifecycle`. Closure
// serialization copies local modules by value, so the engine must be required, never captured;
// what lands in state is this small class and a module name.
import type * as pulumi from "@pulumi/pulumi";
import type { DiffResult } from "./diff";

/** What an engine module exports as `lifecycle`: plain functions, no Pulumi. */
export interface Lifecycle<I, O> {
  check(olds: Partial<I>, news: I): Promise<{ inputs: I; failures: { property: string; reason: string }[] }>;
  diff(id: string, olds: O, news: I): DiffResult | Promise<DiffResult>;
  create(inputs: I): Promise<{ id: string; outs: O }>;
  update(id: string, olds: O, news: I): Promise<O>;
  read(id: string, props?: O): Promise<{ id?: string; props?: O }>;
  delete(id: string, props: O): Promise<void>;
}

/** A lifecycle module: `export const lifecycle` beside a resource class. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type LifecycleModule = { lifecycle: Lifecycle<any, any> };
type InputsOf<M extends LifecycleModule> = M["lifecycle"] extends Lifecycle<infer I, unknown> ? I : never;
type OutputsOf<M extends LifecycleModule> = M["lifecycle"] extends Lifecycle<unknown, infer O> ? O : never;

/**
 * The provider of one resource. `M` is the lifecycle module's type (`typeof import("./x.lifecycle")`),
 * so the class names its logic in a way a reader and "go to definition" can follow; `moduleName`
 * is the same module by the package's own name, required at call time.
 */
export class EngineProvider<M extends LifecycleModule, I = InputsOf<M>, O = OutputsOf<M>> implements pulumi.dynamic.ResourceProvider<I, O> {
  /** @param moduleName e.g. "imageyard/provider/resources/mirroredImage.lifecycle" */
  constructor(readonly moduleName: string) {}

  private lifecycle(): Lifecycle<I, O> {
    return require(this.moduleName).lifecycle;
  }
  async check(olds: I, news: I) {
    return this.lifecycle().check(olds, news);
  }
  async diff(id: string, olds: O, news: I) {
    return this.lifecycle().diff(id, olds, news);
  }
  async create(inputs: I) {
    return this.lifecycle().create(inputs);
  }
  async update(id: string, olds: O, news: I) {
    return { outs: await this.lifecycle().update(id, olds, news) };
  }
  async read(id: string, props?: O) {
    return this.lifecycle().read(id, props);
  }
  async delete(id: string, props: O) {
    await this.lifecycle().delete(id, props);
  }
}
