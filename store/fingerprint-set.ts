/**
 * "Is this block already stored?" in ~20 ns instead of a LevelDB lookup (7-26 µs): an open-addressing
 * table of 64-bit digest prefixes, 8 bytes a slot, kept at most half full, so 16-32 bytes per stored
 * block (1M blocks: 16-32 MiB). A hit is only "maybe": the caller confirms it against the index, so a
 * prefix collision can cost a lookup but never lose a block.
 *
 * The table lives in shared memory so worker threads can ask too (view()): a worker that sees a digest
 * as "maybe stored" skips compressing that chunk. Workers only read; a read racing a write, or a view
 * from before a resize, can only answer "no" for something present (a wasted compression), never "yes"
 * for something absent that the caller would then not confirm.
 */
import { viewMayHave, type FingerprintView } from '../codecs/fingerprint.js'

export { viewMayHave, type FingerprintView }

export class FingerprintSet {
  private table: Uint32Array
  private mask: number
  private count = 0

  constructor(expected = 1 << 16) {
    let cap = 1 << 10
    while (cap < expected * 2) cap *= 2
    this.table = FingerprintSet.alloc(cap * 2)
    this.mask = cap - 1
  }

  private static alloc(words: number): Uint32Array {
    return new Uint32Array(new SharedArrayBuffer(words * 4))
  }

  /** The current table, for readers on other threads (see the file comment). */
  view(): FingerprintView {
    return { table: this.table, mask: this.mask }
  }

  get size(): number {
    return this.count
  }

  get bytes(): number {
    return this.table.byteLength
  }

  private static parts(digest: Uint8Array): [number, number] {
    const lo = (digest[0]! | (digest[1]! << 8) | (digest[2]! << 16) | (digest[3]! << 24)) >>> 0
    const hi = (digest[4]! | (digest[5]! << 8) | (digest[6]! << 16) | (digest[7]! << 24)) >>> 0
    // (0,0) marks an empty slot; folding a zero prefix onto 1 only adds a false positive.
    return lo === 0 && hi === 0 ? [1, 0] : [lo, hi]
  }

  add(digest: Uint8Array): void {
    if ((this.count + 1) * 2 > this.mask + 1) this.grow()
    const [lo, hi] = FingerprintSet.parts(digest)
    if (this.insert(lo, hi)) this.count++
  }

  mayHave(digest: Uint8Array): boolean {
    const [lo, hi] = FingerprintSet.parts(digest)
    const t = this.table
    for (let i = lo & this.mask; ; i = (i + 1) & this.mask) {
      const a = t[2 * i]!
      const b = t[2 * i + 1]!
      if (a === 0 && b === 0) return false
      if (a === lo && b === hi) return true
    }
  }

  private insert(lo: number, hi: number): boolean {
    const t = this.table
    for (let i = lo & this.mask; ; i = (i + 1) & this.mask) {
      const a = t[2 * i]!
      const b = t[2 * i + 1]!
      if (a === 0 && b === 0) {
        t[2 * i] = lo
        t[2 * i + 1] = hi
        return true
      }
      if (a === lo && b === hi) return false
    }
  }

  private grow(): void {
    const old = this.table
    this.table = FingerprintSet.alloc(old.length * 2)
    this.mask = this.table.length / 2 - 1
    for (let i = 0; i < old.length; i += 2) {
      if (old[i] !== 0 || old[i + 1] !== 0) this.insert(old[i]!, old[i + 1]!)
    }
  }
}
