/** Small helpers the tests share: draining an async iterable, bytes as hex. */

/** Every item of an async iterable, in order. */
export async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const x of it) out.push(x)
  return out
}

/** Bytes as lowercase hex (for comparisons whose failures read well). */
export function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex')
}
