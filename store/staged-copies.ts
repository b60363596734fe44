/**
 * gc's copies staged in the open pack (BlockStore.copyEntry): where each copied block now is, until
 * the commit moves its index entry there. Columns and an open-addressing table of row numbers, not a
 * Map of strings and an object per copy: a rewrite stages tens of thousands of copies a commit, and
 * each is looked up (has it been copied already?) before it is staged.
 */
import { CID_LENGTH, type CidBytes } from '../codecs/cid.js'
import { blockKey } from './keys.js'
import type { KVOp } from './kv.js'
import { LOCATION_SIZE, type BlockLocation } from './location.js'

const BLOCK_KEY_PREFIX = blockKey(new Uint8Array(0))[0]!
const KEY_LENGTH = 1 + CID_LENGTH

export class StagedCopies {
  private cids = new Uint8Array(0)
  private pack = new Uint32Array(0)
  private offset = new Float64Array(0)
  private stored = new Uint32Array(0)
  private raw = new Uint32Array(0)
  private codec = new Uint8Array(0)
  private depth = new Uint8Array(0)
  /** row + 1 per slot, 0: empty; at most half full */
  private table = new Int32Array(0)
  count = 0

  /** Where `cid` was copied to (the last copy), if it was. */
  get(cid: CidBytes): BlockLocation | undefined {
    const row = this.count === 0 ? -1 : this.find(cid, 0)
    if (row < 0) return undefined
    return { pack: this.pack[row]!, offset: this.offset[row]!, storedLength: this.stored[row]!, rawLength: this.raw[row]!, codec: this.codec[row]!, depth: this.depth[row]! }
  }

  has(cid: Uint8Array, at = 0): boolean {
    return this.count > 0 && this.find(cid, at) >= 0
  }

  /** Records a copy of the CID at cid[at] (a later copy of the same CID replaces the earlier one). */
  add(cid: Uint8Array, at: number, loc: BlockLocation): void {
    if ((this.count + 1) * 2 > this.table.length) this.grow()
    let row = this.find(cid, at)
    if (row < 0) {
      this.table[-1 - row] = this.count + 1
      row = this.count++
      for (let i = 0; i < CID_LENGTH; i++) this.cids[row * CID_LENGTH + i] = cid[at + i]!
    }
    this.pack[row] = loc.pack
    this.offset[row] = loc.offset
    this.stored[row] = loc.storedLength
    this.raw[row] = loc.rawLength
    this.codec[row] = loc.codec
    this.depth[row] = loc.depth
  }

  /** The index operations that move every copied block's entry to its copy (keys and values views of two buffers). */
  ops(): KVOp[] {
    const out: KVOp[] = new Array(this.count)
    const keys = new Uint8Array(this.count * KEY_LENGTH)
    const values = Buffer.alloc(this.count * LOCATION_SIZE)
    for (let r = 0; r < this.count; r++) {
      const k = r * KEY_LENGTH
      const v = r * LOCATION_SIZE
      keys[k] = BLOCK_KEY_PREFIX
      keys.set(this.cids.subarray(r * CID_LENGTH, (r + 1) * CID_LENGTH), k + 1)
      // as encodeLocation writes it
      const offset = this.offset[r]!
      values.writeUInt32LE(this.pack[r]!, v)
      values.writeUInt32LE(offset % 0x100000000, v + 4)
      values.writeUInt32LE(Math.floor(offset / 0x100000000), v + 8)
      values.writeUInt32LE(this.stored[r]!, v + 12)
      values.writeUInt32LE(this.raw[r]!, v + 16)
      values[v + 20] = this.codec[r]!
      values[v + 21] = this.depth[r]!
      out[r] = { type: 'put', key: keys.subarray(k, k + KEY_LENGTH), value: values.subarray(v, v + LOCATION_SIZE) }
    }
    return out
  }

  clear(): void {
    if (this.count === 0) return
    this.count = 0
    this.table.fill(0)
  }

  /** The hash of a CID: digest bytes 4..7 (BLAKE3 output is uniform). */
  private hash(cid: Uint8Array, at: number): number {
    const d = at + 4
    return cid[d]! | (cid[d + 1]! << 8) | (cid[d + 2]! << 16) | (cid[d + 3]! << 24)
  }

  /** The row holding the CID at cid[at], or -1-(the empty slot it would go to). */
  private find(cid: Uint8Array, at: number): number {
    const mask = this.table.length - 1
    for (let i = this.hash(cid, at) & mask; ; i = (i + 1) & mask) {
      const r = this.table[i]! - 1
      if (r < 0) return -1 - i
      if (this.equals(r, cid, at)) return r
    }
  }

  /** The empty slot the CID at cid[at] goes to (it is not in the table). */
  private slotFor(cid: Uint8Array, at: number): number {
    const mask = this.table.length - 1
    let i = this.hash(cid, at) & mask
    while (this.table[i] !== 0) i = (i + 1) & mask
    return i
  }

  private equals(row: number, cid: Uint8Array, at: number): boolean {
    const c = this.cids
    const o = row * CID_LENGTH
    // the digest's end first: CIDs of one codec share their first bytes
    for (let i = CID_LENGTH - 1; i >= 0; i--) if (c[o + i] !== cid[at + i]) return false
    return true
  }

  /** Doubles the columns and the table (rows keep their numbers). */
  private grow(): void {
    const rows = Math.max(1024, this.pack.length * 2)
    const cids = new Uint8Array(rows * CID_LENGTH)
    cids.set(this.cids)
    this.cids = cids
    this.pack = grown(this.pack, new Uint32Array(rows))
    this.offset = grown(this.offset, new Float64Array(rows))
    this.stored = grown(this.stored, new Uint32Array(rows))
    this.raw = grown(this.raw, new Uint32Array(rows))
    this.codec = grown(this.codec, new Uint8Array(rows))
    this.depth = grown(this.depth, new Uint8Array(rows))
    this.table = new Int32Array(rows * 2)
    for (let r = 0; r < this.count; r++) this.table[this.slotFor(this.cids, r * CID_LENGTH)] = r + 1
  }
}

function grown<T extends Uint8Array | Uint32Array | Float64Array>(from: T, to: T): T {
  to.set(from as never)
  return to
}
