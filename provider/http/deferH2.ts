// undici's Client requires its HTTP/2 half at load, and with it node:http2 and node:tls: about a
// sixth of the CLI's start-up, for a protocol we never ask for (allowH2 stays off). A stand-in in
// the module cache loads the real module on first use, so HTTP/2 still works if it is ever enabled.
// Imported by client.ts before undici; anything unexpected (a bundler without require.cache, a
// moved file) leaves undici to load as usual.
import Module from "node:module";

type ConnectH2 = (...args: unknown[]) => unknown;

export function deferHttp2(): boolean {
  try {
    const path = require.resolve("undici/lib/dispatcher/client-h2");
    if (require.cache[path]) return false;
    let real: ConnectH2 | undefined;
    const stand = new Module(path, module);
    stand.filename = path;
    stand.loaded = true;
    stand.exports = function connectH2(this: unknown, ...args: unknown[]): unknown {
      if (!real) {
        delete require.cache[path];
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        real = require(path) as ConnectH2;
      }
      return real.apply(this, args);
    };
    require.cache[path] = stand;
    return true;
  } catch {
    return false;
  }
}

deferHttp2();
