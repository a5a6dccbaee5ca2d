// The one dynamic provider every imageyard resource uses: each method loads the resource's
// lifecycle module by the package's own name at call time and forwards to its `lifecycle`.
// Closure serialization copies local modules by value, so the lifecycle must be required, never
// captured; what lands in state is this small class and a module name.
import type * as pulumi from "@pulumi/pulumi";
import type { DiffResult } from "./diff";

/** Where an operation's lines go. */
export interface OperationContext {
  /** Live progress (bytes, blobs, nodes): shown while the operation runs, then dropped. */
  progress(line: string): void;
  /** A line that stays in the output after the run (the one-line summary, warnings). */
  log(line: string): void;
}

/** What a lifecycle module exports as `lifecycle`: plain functions, no Pulumi. */
export interface Lifecycle<I, O> {
  check(olds: Partial<I>, news: I): Promise<{ inputs: I; failures: { property: string; reason: string }[] }>;
  diff(id: string, olds: O, news: I): DiffResult | Promise<DiffResult>;
  create(inputs: I, ctx?: OperationContext): Promise<{ id: string; outs: O }>;
  update(id: string, olds: O, news: I, ctx?: OperationContext): Promise<O>;
  read(id: string, props?: O, ctx?: OperationContext): Promise<{ id?: string; props?: O }>;
  delete(id: string, props: O, ctx?: OperationContext): Promise<void>;
}

/** A lifecycle module: `export const lifecycle` beside a resource class. */
// biome-ignore lint/suspicious/noExplicitAny: any lifecycle, whatever its inputs and outputs
export type LifecycleModule = { lifecycle: Lifecycle<any, any> };
type InputsOf<M extends LifecycleModule> = M["lifecycle"] extends Lifecycle<infer I, unknown> ? I : never;
type OutputsOf<M extends LifecycleModule> = M["lifecycle"] extends Lifecycle<unknown, infer O> ? O : never;

/**
 * The resource's own URN, passed in by the resource class as this input: the dynamic provider
 * API gives methods no URN, and engine log messages need one to show under their resource.
 */
export const URN_KEY = "__urn";

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
  private context(props: unknown): OperationContext {
    const { operationContext } = require("imageyard/provider/resources/engineLog") as typeof import("./engineLog");
    return operationContext(urnOf(props));
  }
  async check(olds: I, news: I) {
    const r = await this.lifecycle().check(olds, news);
    // Lifecycles rebuild their inputs; the URN is the provider's business, so it is carried over.
    return { ...r, inputs: withUrn(r.inputs, urnOf(news)) };
  }
  async diff(id: string, olds: O, news: I) {
    return this.lifecycle().diff(id, olds, news);
  }
  async create(inputs: I) {
    const r = await this.lifecycle().create(inputs, this.context(inputs));
    return { ...r, outs: withUrn(r.outs, urnOf(inputs)) };
  }
  async update(id: string, olds: O, news: I) {
    return { outs: withUrn(await this.lifecycle().update(id, olds, news, this.context(news)), urnOf(news)) };
  }
  async read(id: string, props?: O) {
    const r = await this.lifecycle().read(id, props, this.context(props));
    return r.props === undefined ? r : { ...r, props: withUrn(r.props, urnOf(props)) };
  }
  async delete(id: string, props: O) {
    await this.lifecycle().delete(id, props, this.context(props));
  }
}

function urnOf(props: unknown): string | undefined {
  const v = props && typeof props === "object" ? (props as Record<string, unknown>)[URN_KEY] : undefined;
  return typeof v === "string" ? v : undefined;
}

function withUrn<T>(obj: T, urn: string | undefined): T {
  return urn === undefined || !obj || typeof obj !== "object" ? obj : { ...obj, [URN_KEY]: urn };
}
