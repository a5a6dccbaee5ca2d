// Imported first by the CLI: Node's on-disk compile cache makes every later start skip compiling
// undici and the engine again (a no-op copy is otherwise mostly start-up time).
import { enableCompileCache } from "node:module";
import { setFlagsFromString } from "node:v8";

if (typeof enableCompileCache === "function" && process.env.NODE_DISABLE_COMPILE_CACHE === undefined) enableCompileCache();

// undici parses HTTP with llhttp compiled to WebAssembly. V8 starts it on its baseline compiler
// and, after a few responses, recompiles its one large parser function with TurboFan on a
// background thread: ~160 ms of CPU in every process, as much as the rest of a no-op copy. Parsing
// response headers is never hot enough in one CLI run to win that back (a 1 GiB copy measured the
// same either way), so the tier-up budget is raised 100-fold; a long-running process keeps V8's.
setFlagsFromString("--wasm-tiering-budget=1300000000");
