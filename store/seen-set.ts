/**
 * A set of CIDs that may be far larger than memory (an export of a whole store: "which blocks did the
 * bundle already get?"). Memory stays bounded whatever the size: a fixed-size Bloom filter answers
 * "never added" for most new CIDs at once; everything added goes to a private, temporary KV (LevelDB
 * on disk, in a directory the set deletes when closed) that settles the filter's "maybe".
 *
 * The filter takes its k = 7 bit positions straight from the CID's digest bytes: BLAKE3 output is
 * uniform, so no further hashing is needed. Sized at 10 bits per expected entry (false positives ~1%),
 * at most 32 MiB; past its design size it only answers "maybe" more often, which costs a lookup.
 */
import fs from 'node:fs'
import path from 'node:path'
import type { KV } from './kv.js'
import { LevelKV } from './level-kv.js'
import { MemoryKV } from './memory-kv.js'

const K = 7
const MAX_BITS = 256 * 1024 * 1024
/** added CIDs wait in memory until this many, then go to the KV in one batch */
const FLUSH_EVERY = 8192

export class SeenSet {
  private readonly bits: Uint32Array
  private readonly mask: number
  private pending = new Map<string, Uint8Array>()
  private writing: Map<string, Uint8Array> | undefined
  private count = 0
  private closed = false

  private constructor(
    private readonly kv: KV,
    private readonly dir: string | undefined,
    expected: number,
  ) {
    let nbits = 1 << 20
    while (nbits < expected * 10 && nbits < MAX_BITS) nbits *= 2
    this.bits = new Uint32Array(nbits / 32)
    this.mask = nbits - 1
  }

  /**
   * A new empty set. `dir`: a directory to create its temporary LevelDB in (removed on close);
   * undefined keeps everything in memory (unit tests, in-memory stores).
   */
  static async create(dir: string | undefined, expected = 1 << 20): Promise<SeenSet> {
    if (dir === undefined) return new SeenSet(new MemoryKV(), undefined, expected)
    fs.mkdirSync(path.dirname(dir), { recursive: true })
    fs.rmSync(dir, { recursive: true, force: true })
    const kv = await LevelKV.open(dir)
    return new SeenSet(kv, dir, expected)
  }

  get size(): number {
    return this.count
  }

  private positions(cid: Uint8Array, f: (word: number, bit: number) => boolean | void): boolean {
    // the digest starts at byte 4 of a 36-byte CID; K 4-byte words from it
    const d = cid.length >= 36 ? 4 : 0
    for (let k = 0; k < K; k++) {
      const at = d + ((k * 4) % (cid.length - d - 3))
      const v = (cid[at]! | (cid[at + 1]! << 8) | (cid[at + 2]! << 16) | (cid[at + 3]! << 24)) & this.mask
      if (f(v >>> 5, 1 << (v & 31)) === false) return false
    }
    return true
  }

  /** Whether cid was added. */
  has(cid: Uint8Array): boolean {
    if (!this.positions(cid, (w, b) => (this.bits[w]! & b) !== 0)) return false
    const key = Buffer.from(cid.buffer, cid.byteOffset, cid.byteLength).toString('latin1')
    if (this.pending.has(key) || this.writing?.has(key)) return true
    return this.kv.getSync(cid) !== undefined
  }

  /** Adds cid (a no-op if present). Call flush() now and then (it is cheap unless due). */
  add(cid: Uint8Array): void {
    this.positions(cid, (w, b) => void (this.bits[w]! |= b))
    const key = Buffer.from(cid.buffer, cid.byteOffset, cid.byteLength).toString('latin1')
    if (!this.pending.has(key)) {
      this.pending.set(key, cid.slice())
      this.count++
    }
  }

  /** Writes what waits in memory once enough has gathered (or always, with force). */
  async flush(force = false): Promise<void> {
    if (this.pending.size === 0 || (!force && this.pending.size < FLUSH_EVERY)) return
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
    await this.kv.close()
    if (this.dir) fs.rmSync(this.dir, { recursive: true, force: true })
  }
}
