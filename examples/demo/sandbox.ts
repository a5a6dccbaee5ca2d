// The demo's sandbox: the test bed's upstream and mirror registries on 127.0.0.1, the upstream
// seeded with generated images (fixed seeds: the same bytes and digests on every run, so a
// second `pulumi up` has nothing to do). Used by scripts/demo.sh:
//   node dist/examples/demo/sandbox.js up     → prints {"upstream","mirror","mirrorUsername","mirrorPassword"} as JSON
//   node dist/examples/demo/sandbox.js down   → releases the demo's hold on the test bed
import { defaultStateDir, releaseRegistryTestbed, startRegistryTestbed } from "../../test/testbed/registry";
import { seedImage } from "../../test/testbed/images";

const LEASE = "demo";

async function up(): Promise<void> {
  const stateDir = defaultStateDir();
  const tb = await startRegistryTestbed(stateDir, { lease: LEASE, persistent: true });
  const { upstream, mirror } = tb.registries;
  const seeded = [
    await seedImage(upstream, "demo/webapp:1.4", {
      platforms: ["linux/amd64", "linux/arm64"],
      layers: 3,
      layerSize: "1M",
      sharedLayers: 1,
      withSignature: true,
      seed: "imageyard-demo-webapp",
      stateDir,
    }),
    await seedImage(upstream, "demo/toolbox:2.0", { layers: 2, layerSize: "512K", seed: "imageyard-demo-toolbox", stateDir }),
  ];
  for (const s of seeded) process.stderr.write(`  upstream ${s.ref.padEnd(40)} ${s.digest}\n`);
  process.stdout.write(
    `${JSON.stringify({ upstream: upstream.host, mirror: mirror.host, mirrorUsername: mirror.username, mirrorPassword: mirror.password })}\n`,
  );
}

async function down(): Promise<void> {
  const stopped = await releaseRegistryTestbed(defaultStateDir(), LEASE);
  process.stderr.write(
    stopped ? "  registries stopped\n" : "  registries left running: other users (tests, scripts/testbed.sh up) still hold the test bed\n",
  );
}

const cmd = process.argv[2];
(cmd === "up" ? up() : cmd === "down" ? down() : Promise.reject(new Error("usage: sandbox.js up|down"))).catch((e: unknown) => {
  process.stderr.write(`sandbox: ${(e as Error).message}\n`);
  process.exit(1);
});
