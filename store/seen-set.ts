/**
 * A set of CIDs that may be far larger than memory (an export of a whole store: "which blocks did the
 * bundle already get?"). Memory stays bounded whatever the size, in two tiers:
 *
 * 1. an exact in-memory table of 128-bit digest prefixes (16 bytes a slot, at most half full), sized
 *    from the expected count (with `grow`, doubled and rehashed when half full: a low estimate then
 *    costs a rehash, not a spill to disk), capped at 2^21 slots (32 MiB, a million entries);
 * 2. once the table is half full, further CIDs go to a private temporary KV (LevelDB on disk, in a
 *    directory the set deletes when closed), with a fixed-size Bloom filter (at most 32 MiB) in front
 *    so that most CIDs never added are answered without a lookup.
 *
 * 128 bits of a BLAKE3 digest cannot collide in practice (2^-64 after 2^32 entries); were it to
 * happen, an export would leave a block out and the receiving import would reject the bundle as
 * incomplete (CKPT_BUNDLE_INCOMPLETE) — never a silent loss. The Bloom filter takes its k = 7 bit
 * positions straight from digest bytes: BLAKE3 output is uniform.
 */
import { copyOf } from '../codecs/bytes.js'
import fs from 'node:fs'
import path from 'node:path'
import type { KV } from './kv.js'
import { LevelKV } from './level-kv.js'
import { MemoryKV } from './memory-kv.js'

const K = 7
const MAX_BITS = 256 * 1024 * 1024
const MAX_SLOTS = 1 << 21
/** CIDs bound for the disk tier wait in memory until this many, then go in one batch */
const FLUSH_EVERY = 8192

/** Four bytes at b[i], little-endian, unsigned. */
function word(b: Uint8Array, i: number): number {
  return (b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24)) >>> 0
}

export class SeenSet {
  /** tier 1: 4 u32 words per slot (digest bytes 0..15); all zero = empty */
  private table: Uint32Array
  private slotMask: number
  private inTable = 0
  /** tier 2 */
  private bits: Uint32Array | undefined
  private readonly bitMask: number
  private pending = new Map<string, Uint8Array>()
  private writing: Map<string, Uint8Array> | undefined
  private kv: KV | undefined
  private spilled = 0
  private closed = false

  private constructor(
    private readonly dir: string | undefined,
    expected: number,
    private readonly grows: boolean,
  ) {
    let slots = 1 << 12
    while (slots < expected * 2 && slots < MAX_SLOTS) slots *= 2
    this.table = new Uint32Array(slots * 4)
    this.slotMask = slots - 1
    let nbits = 1 << 20
    while (nbits < expected * 10 && nbits < MAX_BITS) nbits *= 2
    this.bitMask = nbits - 1
  }

  /**
   * A new empty set expecting about `expected` entries. `dir`: where its temporary LevelDB may go
   * (removed on close); undefined keeps the second tier in memory too (unit tests, memory stores).
   * `grow`: the table doubles when half full (up to its cap) before anything spills.
   */
  static async create(dir: string | undefined, expected = 1 << 16, opts: { grow?: boolean } = {}): Promise<SeenSet> {
    return new SeenSet(dir, expected, opts.grow === true)
  }

  get size(): number {
    return this.inTable + this.spilled
  }

  // the 128-bit key of a CID (digest bytes 0..15, the codec folded in) as four words, without an
  // allocation per call
  private k0 = 0
  private k1 = 0
  private k2 = 0
  private k3 = 0

  private key(cid: Uint8Array, at: number): void {
    const d = at + (cid.length - at >= 36 ? 4 : 0)
    // the codec byte keeps a raw block and a node of equal digest (impossible, but cheap) apart
    this.k0 = (word(cid, d) ^ (cid[at + 1]! << 24)) >>> 0
    this.k1 = word(cid, d + 4)
    this.k2 = word(cid, d + 8)
    this.k3 = word(cid, d + 12)
    if (this.k0 === 0 && this.k1 === 0 && this.k2 === 0 && this.k3 === 0) this.k0 = 1
  }

  /** Slot of the current key in the table, or -1-(free slot) when absent. */
  private find(): number {
    const t = this.table
    for (let i = (this.k0 ^ this.k2) & this.slotMask; ; i = (i + 1) & this.slotMask) {
      const o = i * 4
      const a = t[o]!
      if (a === this.k0 && t[o + 1] === this.k1 && t[o + 2] === this.k2 && t[o + 3] === this.k3) return i
      if (a === 0 && t[o + 1] === 0 && t[o + 2] === 0 && t[o + 3] === 0) return -1 - i
    }
  }

  private bloom(cid: Uint8Array, f: (word: number, bit: number) => boolean | void): boolean {
    const d = cid.length >= 36 ? 4 : 0
    for (let k = 0; k < K; k++) {
      const at = d + ((k * 4 + 16) % (cid.length - d - 3))
      const v = (cid[at]! | (cid[at + 1]! << 8) | (cid[at + 2]! << 16) | (cid[at + 3]! << 24)) & this.bitMask
      if (f(v >>> 5, 1 << (v & 31)) === false) return false
    }
    return true
  }

  /** Whether cid was added; `at`: a whole CID lies at cid[at] (a view of it is made only if the disk tier is asked). */
  has(cid: Uint8Array, at = 0): boolean {
    this.key(cid, at)
    if (this.find() >= 0) return true
    if (at !== 0) return this.bits !== undefined && this.has(cid.subarray(at, at + 36))
    if (!this.bits || !this.bloom(cid, (w, b) => (this.bits![w]! & b) !== 0)) return false
    const key = Buffer.from(cid.buffer, cid.byteOffset, cid.byteLength).toString('latin1')
    if (this.pending.has(key) || this.writing?.has(key)) return true
    return this.kv!.getSync(cid) !== undefined
  }

  /** Adds cid (callers add what has() said was absent). Call flush() now and then. */
  add(cid: Uint8Array): void {
    this.key(cid, 0)
    const at = this.find()
    if (at >= 0) return
    if (this.grows && (this.inTable + 1) * 2 > this.slotMask + 1 && this.slotMask + 1 < MAX_SLOTS && !this.bits) {
      this.grow()
      return this.add(cid)
    }
    if ((this.inTable + 1) * 2 <= this.slotMask + 1) {
      const o = (-1 - at) * 4
      this.table[o] = this.k0
      this.table[o + 1] = this.k1
      this.table[o + 2] = this.k2
      this.table[o + 3] = this.k3
      this.inTable++
      return
    }
    this.bits ??= new Uint32Array((this.bitMask + 1) / 32)
    this.bloom(cid, (w, b) => void (this.bits![w]! |= b))
    const key = Buffer.from(cid.buffer, cid.byteOffset, cid.byteLength).toString('latin1')
    if (!this.pending.has(key)) {
      this.pending.set(key, copyOf(cid))
      this.spilled++
    }
  }

  /** Doubles the table, every key rehashed into it. */
  private grow(): void {
    const old = this.table
    this.table = new Uint32Array(old.length * 2)
    this.slotMask = this.table.length / 4 - 1
    const t = this.table
    for (let o = 0; o < old.length; o += 4) {
      const a = old[o]!
      const b = old[o + 1]!
      const c = old[o + 2]!
      const d = old[o + 3]!
      if (a === 0 && b === 0 && c === 0 && d === 0) continue
      let i = (a ^ c) & this.slotMask
      while (t[i * 4] !== 0 || t[i * 4 + 1] !== 0 || t[i * 4 + 2] !== 0 || t[i * 4 + 3] !== 0) i = (i + 1) & this.slotMask
      t[i * 4] = a
      t[i * 4 + 1] = b
      t[i * 4 + 2] = c
      t[i * 4 + 3] = d
    }
  }

  /** Moves what waits for the disk tier there, once enough has gathered (or always, with force). */
  async flush(force = false): Promise<void> {
    if (this.pending.size === 0 || (!force && this.pending.size < FLUSH_EVERY)) return
    if (!this.kv) {
      if (this.dir === undefined) this.kv = new MemoryKV()
      else {
        fs.mkdirSync(path.dirname(this.dir), { recursive: true })
        fs.rmSync(this.dir, { recursive: true, force: true })
        this.kv = await LevelKV.open(this.dir)
      }
    }
    this.writing = this.pending
    this.pending = new Map()
    const empty = new Uint8Array(0)
    await this.kv.batch([...this.writing.values()].map((key) => ({ type: 'put' as const, key, value: empty })))
    this.writing = undefined
  }

  /** Drops everything, the temporary directory included. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.kv?.close()
    if (this.dir) fs.rmSync(this.dir, { recursive: true, force: true })
  }
}
