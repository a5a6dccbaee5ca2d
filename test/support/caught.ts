// The error a promise rejects with, for assertions on code, status and message; a promise that
// resolves fails the test.
export async function caught(p: Promise<unknown>): Promise<Error & { code?: string; status?: number }> {
  try {
    await p;
  } catch (e) {
    return e as Error & { code?: string; status?: number };
  }
  throw new Error("expected a rejection");
}
