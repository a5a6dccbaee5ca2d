// Argument types shared by the resource classes. Inputs all the way down: every leaf may be a
// pulumi.Input, so `password: cfg.requireSecret("…")` type-checks wherever a string goes.
import type * as pulumi from "@pulumi/pulumi";

/** Registry credentials; the resource makes them secret. */
export interface RegistryAuthInput {
  username: pulumi.Input<string>;
  password: pulumi.Input<string>;
}

export interface RegistryTlsInput {
  /** Skip certificate verification (and allow plain HTTP) for this registry. */
  insecure?: pulumi.Input<boolean>;
  /** Extra CA certificate(s), PEM. */
  caCert?: pulumi.Input<string>;
  /** A docker/skopeo certs.d style directory: *.crt CAs, *.cert + *.key client certificate. */
  certDir?: pulumi.Input<string>;
}

/** A deadline: seconds, or a duration as Pulumi's customTimeouts write it ("90s", "20m", "1h30m"). */
export type TimeoutInput = pulumi.Input<number | string>;

/** Deadlines per operation, enforced by the provider (customTimeouts do not reach dynamic providers). */
export interface TimeoutsInput {
  create?: TimeoutInput;
  update?: TimeoutInput;
  delete?: TimeoutInput;
}
