// Imported first by the CLI: Node's on-disk compile cache makes every later start skip compiling
// undici and the engine again (a no-op copy is otherwise mostly start-up time).
import { enableCompileCache } from "node:module";

if (typeof enableCompileCache === "function" && process.env.NODE_DISABLE_COMPILE_CACHE === undefined) enableCompileCache();
