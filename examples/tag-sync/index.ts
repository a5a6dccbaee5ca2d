// regsync / `skopeo sync` as a Pulumi stack: every tag of `source` matching `semver` (or the
// `include` regex, or the `latest` N) mirrored to `target`, one MirroredImage per tag.
//
//   pulumi config set source docker.io/library/alpine
//   pulumi config set target registry.example.com:5000/library/alpine
//   pulumi config set semver '>=3.19'
//   pulumi config set rateLimitWait 30m        # optional: one budget per registry for the stack
//   pulumi config set targetUsername robot
//   pulumi config set --secret targetPassword …
//
// A new upstream tag shows in `pulumi preview` as a new resource.
import * as pulumi from "@pulumi/pulumi";
// In a project of your own: import { TagSync } from "imageyard";
import { TagSync } from "../../index";

const config = new pulumi.Config();
const username = config.get("targetUsername");

const sync = new TagSync("tags", {
  source: config.require("source"),
  target: config.require("target"),
  semver: config.get("semver"),
  include: config.get("include"),
  latest: config.getNumber("latest"),
  rateLimitWait: config.get("rateLimitWait"),
  targetAuth: username === undefined ? undefined : { username, password: config.requireSecret("targetPassword") },
});

export const tags = sync.tags;
export const pinned = sync.pinned;
