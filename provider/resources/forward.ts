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

export class EngineProvider<I, O> implements pulumi.dynamic.ResourceProvider<I, O> {
  /** @param engine the module to load, e.g. "imageyard/provider/oci/mirror" */
  constructor(private readonly engine: string) {}

  private lifecycle(): Lifecycle<I, O> {
    return require(this.engine).lifecycle;
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
