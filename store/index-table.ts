/**
 * The index as a table for verification: every index entry's CID, location and state, looked up by
 * CID in an open-addressing hash (~70 bytes per block), so a store of millions of blocks is checked
 * without a LevelDB lookup per link.
 */
import type { CidBytes } from '../codecs/cid.js'

/** matched an intact pack entry */
export const ENTRY_OK = 1
/** damaged or dangling */
export const ENTRY_BAD = 2

export class IndexTable {
  n = 0
  cids = new Uint8Array(36 * 1024)
  pack = new Uint32Array(1024)
  offset = new Float64Array(1024)
  stored = new Uint32Array(1024)
  raw = new Uint32Array(1024)
  codec = new Uint8Array(1024)
  depth = new Uint8Array(1024)
  /** 0 not seen in a pack yet, ENTRY_OK matched an intact entry, ENTRY_BAD damaged or dangling */
  state = new Uint8Array(1024)
  private slots = new Int32Array(2048).fill(-1)

  private hash(c: Uint8Array, at: number): number {
    return (c[at + 4]! | (c[at + 5]! << 8) | (c[at + 6]! << 16) | (c[at + 7]! << 24)) >>> 0
  }

  private grow(): void {
    const cap = this.pack.length * 2
    const g = <T extends Uint8Array | Uint32Array | Float64Array>(a: T, n: number): T => {
      const b = new (a.constructor as new (n: number) => T)(n)
      b.set(a)
      return b
    }
    this.cids = g(this.cids, cap * 36)
    this.pack = g(this.pack, cap)
    this.offset = g(this.offset, cap)
    this.stored = g(this.stored, cap)
    this.raw = g(this.raw, cap)
    this.codec = g(this.codec, cap)
    this.depth = g(this.depth, cap)
    this.state = g(this.state, cap)
    this.slots = new Int32Array(cap * 2).fill(-1)
    for (let i = 0; i < this.n; i++) this.place(i)
  }

  private place(i: number): void {
    const mask = this.slots.length - 1
    for (let s = this.hash(this.cids, i * 36) & mask; ; s = (s + 1) & mask) {
      if (this.slots[s] === -1) {
        this.slots[s] = i
        return
      }
    }
  }

  add(cid: Uint8Array, l: { pack: number; offset: number; storedLength: number; rawLength: number; codec: number; depth: number }): void {
    if (this.n === this.pack.length) this.grow()
    const i = this.n++
    this.cids.set(cid, i * 36)
    this.pack[i] = l.pack
    this.offset[i] = l.offset
    this.stored[i] = l.storedLength
    this.raw[i] = l.rawLength
    this.codec[i] = l.codec
    this.depth[i] = l.depth
    this.place(i)
  }

  find(cid: Uint8Array): number {
    const mask = this.slots.length - 1
    for (let s = this.hash(cid, 0) & mask; ; s = (s + 1) & mask) {
      const i = this.slots[s]!
      if (i === -1) return -1
      let same = true
      for (let k = 0; k < 36; k++) {
        if (this.cids[i * 36 + k] !== cid[k]) {
          same = false
          break
        }
      }
      if (same) return i
    }
  }

  cid(i: number): CidBytes {
    return this.cids.slice(i * 36, i * 36 + 36)
  }
}

// ------------------------------------------------------------------------- the generator
