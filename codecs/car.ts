/**
 * CAR (Content Addressable aRchive) framing, bytes in, bytes out (SPEC.md §9).
 *
 *   CARv1   varint(len) header | section*       header = dag-cbor { "roots": [CID, ...], "version": 1 }
 *           section = varint(len) CID-bytes block-bytes     (len counts the CID and the block)
 *   CARv2   11-byte pragma 0a a1 67 "version" 02 | 40-byte header | ... | CARv1 payload | ... index
 *           header = 16 B characteristics | u64le dataOffset | u64le dataSize | u64le indexOffset
 *
 * Varints are unsigned LEB128 and must be minimal. The reader streams: it never holds more than one
 * section, refuses absurd lengths before reading them, and reports every failure as CKPT_BAD_BUNDLE
 * with the byte offset (in the uncompressed stream) where it happened.
 */
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { CkptError } from './errors.js'

/** The CARv2 pragma: varint 10, then dag-cbor { "version": 2 }. */
export const CARV2_PRAGMA = Uint8Array.of(0x0a, 0xa1, 0x67, 0x76, 0x65, 0x72, 0x73, 0x69, 0x6f, 0x6e, 0x02)
/** A header larger than this is refused (a CAR header is a few roots). */
export const MAX_HEADER = 1 << 20
/** A section larger than this is refused: the largest block ckpt stores (16 MiB) plus its CID. */
export const MAX_SECTION = (16 << 20) + 128
/** Roots in one header, at most. */
export const MAX_ROOTS = 1 << 16

export function varintLength(n: number): number {
  let len = 1
  while (n >= 0x80) {
    n = Math.floor(n / 128)
    len++
  }
  return len
}

export function writeVarint(out: Uint8Array, at: number, n: number): number {
  while (n >= 0x80) {
    out[at++] = (n & 0x7f) | 0x80
    n = Math.floor(n / 128)
  }
  out[at++] = n
  return at
}

/** The CARv1 header (with its length prefix) for these roots. */
export function encodeCarHeader(roots: Uint8Array[]): Uint8Array {
  const body = dagCbor.encode({ roots: roots.map((r) => CID.decode(r)), version: 1 })
  const out = new Uint8Array(varintLength(body.length) + body.length)
  out.set(body, writeVarint(out, 0, body.length))
  return out
}

/** Bytes of one section's prefix (length varint and CID); the block follows it. */
export function sectionPrefix(cid: Uint8Array, blockLength: number): Uint8Array {
  const n = cid.length + blockLength
  const out = new Uint8Array(varintLength(n) + cid.length)
  out.set(cid, writeVarint(out, 0, n))
  return out
}

export function sectionLength(cid: Uint8Array, blockLength: number): number {
  return varintLength(cid.length + blockLength) + cid.length + blockLength
}

export function badBundle(message: string, offset: number, details: Record<string, unknown> = {}, cause?: unknown): CkptError {
  return new CkptError('CKPT_BAD_BUNDLE', `${message} (at byte ${offset})`, { offset, ...details }, cause)
}

export interface CarSection {
  /** the CID's bytes, as in the file (any CID; the caller decides what it accepts) */
  cid: Uint8Array
  block: Uint8Array
  /** stream offset of the section (its length varint) */
  offset: number
}

/**
 * Streams a CAR (v1, or v2 by its data payload) from chunks of bytes. header() first, then
 * sections() until it ends. Views it returns are valid until the next call.
 */
export class CarReader {
  /** the bytes being read: the reader's own buffer, or a chunk of the source read in place (borrowed) */
  private buf: Uint8Array = new Uint8Array(0)
  private owned: Uint8Array = new Uint8Array(0)
  private borrowed = false
  private start = 0
  private end = 0
  /** stream offset of buf[start] */
  private pos = 0
  private done = false
  private readonly it: AsyncIterator<Uint8Array>
  /** CARv2: where the v1 payload ends (stream offset), else Infinity */
  private limit = Infinity
  version = 1

  constructor(source: AsyncIterable<Uint8Array>) {
    this.it = source[Symbol.asyncIterator]()
  }

  /** stream offset of the next unread byte */
  get offset(): number {
    return this.pos
  }

  private async fill(n: number): Promise<boolean> {
    while (this.end - this.start < n && !this.done) {
      // a borrowed chunk is the source's only until the next pull: what is left of it is copied first
      if (this.borrowed) this.keepRest()
      let r: IteratorResult<Uint8Array>
      try {
        r = await this.it.next()
      } catch (err) {
        if (err instanceof CkptError) throw err
        throw badBundle(`the bundle could not be read: ${(err as Error).message}`, this.pos + (this.end - this.start), {}, err)
      }
      if (r.done) {
        this.done = true
        break
      }
      const chunk = r.value
      if (!(chunk instanceof Uint8Array)) throw new TypeError('a bundle source must yield Uint8Array chunks')
      if (chunk.length === 0) continue
      const have = this.end - this.start
      if (have === 0) {
        // nothing pending: sections are read where the chunk is, no copy
        this.buf = chunk
        this.start = 0
        this.end = chunk.length
        this.borrowed = true
        continue
      }
      if (this.start > 0 && this.buf.length - have >= chunk.length && this.end + chunk.length > this.buf.length) {
        this.buf.copyWithin(0, this.start, this.end)
        this.end = have
        this.start = 0
      }
      if (this.end + chunk.length > this.buf.length) {
        const next = new Uint8Array(Math.max(have + chunk.length, Math.min(2 * this.buf.length, have + chunk.length + (4 << 20)), 64 << 10))
        next.set(this.buf.subarray(this.start, this.end))
        this.buf = this.owned = next
        this.end = have
        this.start = 0
      }
      this.buf.set(chunk, this.end)
      this.end += chunk.length
    }
    return this.end - this.start >= n
  }

  /** The unread rest of a borrowed chunk, moved into the reader's own buffer. */
  private keepRest(): void {
    const have = this.end - this.start
    if (this.owned.length < have) this.owned = new Uint8Array(Math.max(have, 64 << 10))
    this.owned.set(this.buf.subarray(this.start, this.end), 0)
    this.buf = this.owned
    this.start = 0
    this.end = have
    this.borrowed = false
  }

  private take(n: number): Uint8Array {
    const v = this.buf.subarray(this.start, this.start + n)
    this.start += n
    this.pos += n
    return v
  }

  private async skip(n: number, what: string): Promise<void> {
    while (n > 0) {
      if (!(await this.fill(1))) throw badBundle(`the bundle ends inside ${what}`, this.pos)
      const k = Math.min(n, this.end - this.start)
      this.take(k)
      n -= k
    }
  }

  /** A minimal unsigned varint; undefined at a clean end of stream (when allowed). */
  private async varint(what: string, atEnd: 'ok' | 'error'): Promise<number | undefined> {
    const at = this.pos
    if (!(await this.fill(1))) {
      if (atEnd === 'ok') return undefined
      throw badBundle(`the bundle ends before ${what}`, at)
    }
    let n = 0
    let mul = 1
    for (let i = 0; ; i++) {
      if (i >= 8) throw badBundle(`${what} is not a valid varint (too long)`, at)
      if (!(await this.fill(i + 1))) throw badBundle(`the bundle ends inside ${what}`, at)
      const b = this.buf[this.start + i]!
      n += (b & 0x7f) * mul
      mul *= 128
      if ((b & 0x80) === 0) {
        if (b === 0 && i > 0) throw badBundle(`${what} is not a minimal varint`, at)
        this.take(i + 1)
        return n
      }
    }
  }

  /** Reads the header: CARv1 roots (CARv2 is unwrapped to its v1 payload). */
  async header(): Promise<{ version: number; roots: Uint8Array[] }> {
    if ((await this.fill(CARV2_PRAGMA.length)) && CARV2_PRAGMA.every((b, i) => this.buf[this.start + i] === b)) {
      this.take(CARV2_PRAGMA.length)
      if (!(await this.fill(40))) throw badBundle('the bundle ends inside the CARv2 header', this.pos)
      const h = this.take(40)
      const dv = new DataView(h.buffer, h.byteOffset, 40)
      const dataOffset = Number(dv.getBigUint64(16, true))
      const dataSize = Number(dv.getBigUint64(24, true))
      if (!Number.isSafeInteger(dataOffset) || !Number.isSafeInteger(dataSize) || dataOffset < CARV2_PRAGMA.length + 40 || dataSize < 2) {
        throw badBundle('the CARv2 header has an impossible data offset or size', CARV2_PRAGMA.length + 16)
      }
      await this.skip(dataOffset - this.pos, 'the CARv2 padding')
      this.version = 2
      this.limit = dataOffset + dataSize
    }
    const at = this.pos
    const len = await this.varint('the header length', 'error')
    if (len === 0 || len! > MAX_HEADER) throw badBundle(`the header length ${len} is absurd (at most ${MAX_HEADER})`, at)
    if (!(await this.fill(len!))) throw badBundle('the bundle ends inside its header', this.pos)
    const body = this.take(len!)
    let h: unknown
    try {
      h = dagCbor.decode(body)
    } catch (err) {
      throw badBundle('the header is not valid dag-cbor: not a CAR file', at, {}, err)
    }
    const rec = h as { version?: unknown; roots?: unknown }
    if (typeof h !== 'object' || h === null || Array.isArray(h)) throw badBundle('the header is not a map: not a CAR file', at)
    if (rec.version !== 1) throw badBundle(`CAR version ${String(rec.version)} inside the header is not supported (1, or 2 by its pragma)`, at)
    if (!Array.isArray(rec.roots)) throw badBundle('the header has no roots array', at)
    if (rec.roots.length > MAX_ROOTS) throw badBundle(`the header lists ${rec.roots.length} roots (at most ${MAX_ROOTS})`, at)
    const roots = rec.roots.map((r, i) => {
      const c = CID.asCID(r)
      if (!c) throw badBundle(`root ${i} of the header is not a CID`, at)
      return c.bytes
    })
    return { version: this.version, roots }
  }

  /** The sections, in file order. */
  async *sections(): AsyncIterable<CarSection> {
    for (;;) {
      if (this.pos >= this.limit) return
      const offset = this.pos
      const len = await this.varint('a section length', 'ok')
      if (len === undefined) {
        if (this.limit !== Infinity) throw badBundle('the bundle ends before the CARv2 data size says', offset)
        return
      }
      if (len > MAX_SECTION) throw badBundle(`a section length of ${len} bytes is absurd (at most ${MAX_SECTION})`, offset)
      if (len < 2) throw badBundle(`a section of ${len} bytes cannot hold a CID`, offset)
      if (this.pos + len > this.limit) throw badBundle('a section runs past the CARv2 data size', offset)
      if (!(await this.fill(len))) throw badBundle(`the bundle is truncated: a section of ${len} bytes is cut short`, offset)
      const section = this.take(len)
      const cidLen = cidByteLength(section)
      if (cidLen === undefined || cidLen > section.length) throw badBundle('a section does not start with a readable CID', offset)
      yield { cid: section.subarray(0, cidLen), block: section.subarray(cidLen), offset }
    }
  }
}

/** Length of the CID at the start of bytes (v0 or v1), or undefined if it cannot be one. */
export function cidByteLength(bytes: Uint8Array): number | undefined {
  if (bytes.length >= 34 && bytes[0] === 0x12 && bytes[1] === 0x20) return 34 // CIDv0: sha2-256 multihash
  let at = 0
  const next = (): number | undefined => {
    let n = 0
    let mul = 1
    for (let i = 0; i < 8; i++) {
      if (at >= bytes.length) return undefined
      const b = bytes[at++]!
      n += (b & 0x7f) * mul
      mul *= 128
      if ((b & 0x80) === 0) return n
    }
    return undefined
  }
  const version = next()
  if (version !== 1) return undefined
  if (next() === undefined) return undefined // codec
  if (next() === undefined) return undefined // hash code
  const digestLength = next()
  if (digestLength === undefined || digestLength > 128) return undefined
  return at + digestLength
}
