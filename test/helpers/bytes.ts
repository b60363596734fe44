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

/** `size` deterministic pseudo-random bytes (xorshift32 from `seed`), every third 4 KiB page zero (holes). */
export function pattern(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size)
  let x = seed * 2654435761
  for (let i = 0; i < size; i += 4) {
    x = (x ^ (x << 13)) >>> 0
    x = (x ^ (x >>> 17)) >>> 0
    x = (x ^ (x << 5)) >>> 0
    b.writeUInt32LE(x, i)
  }
  for (let p = 0; p < size / 4096; p += 3) b.fill(0, p * 4096, p * 4096 + 4096)
  return b
}
