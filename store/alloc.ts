/**
 * Result buffers for block reads, carved from 256 KiB slabs. Allocating a fresh 4 KiB ArrayBuffer
 * costs ~3 µs here (V8's external-memory accounting triggers GC), as much as hashing the page; a view
 * of a slab costs a fraction. A slab stays alive while any of its views does (at most 256 KiB each).
 */
const SLAB = 256 << 10
let slab = new ArrayBuffer(SLAB)
let used = 0

export function allocBytes(n: number): Uint8Array {
  if (n > SLAB >> 4) return new Uint8Array(n)
  if (used + n > SLAB) {
    slab = new ArrayBuffer(SLAB)
    used = 0
  }
  const v = new Uint8Array(slab, used, n)
  used += (n + 7) & ~7
  return v
}
