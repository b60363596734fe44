/**
 * At-rest compression of stored blocks. The block's CID always hashes the raw bytes; the pack entry
 * records which codec below turned them into the stored payload, and its raw length.
 */
import { createRequire } from 'node:module'
import zlib, { deflateRawSync, inflateRawSync } from 'node:zlib'
import { CkptError } from './errors.js'

/** At-rest codec numbers recorded per stored block (part of the pack format; never renumber). */
export const AT_REST = { identity: 0, zstd: 1, deflate: 2, nodeDelta: 3, chunkDelta: 4 } as const

/** the highest at-rest codec number this build knows (a pack entry with another is damage) */
export const MAX_AT_REST = AT_REST.chunkDelta

/** Codes stored as a delta against another block: opened through their chain, never alone. */
export function storedAsDelta(code: number): boolean {
  return code === AT_REST.nodeDelta || code === AT_REST.chunkDelta
}

export interface Compressor {
  readonly code: number
  readonly name: string
  /** the implementation behind the codec, where there are several (zstd: 'zstd-napi' or 'node:zlib') */
  readonly impl?: string
  compress(data: Uint8Array): Uint8Array
  /**
   * Compresses into `dst` (at least maxCompressedLength(data.length) bytes) and returns the length
   * written: saves the allocation of a result per block (~3 us per 4 KiB page here, as much as hashing it).
   */
  compressInto?(data: Uint8Array, dst: Uint8Array): number
  /** An upper bound of compress(data).length for data of n bytes. */
  maxCompressedLength?(n: number): number
  /** `into`, when given, is a buffer of rawLength bytes to write the result to (saves an allocation) */
  decompress(data: Uint8Array, rawLength: number, into?: Uint8Array): Uint8Array
  /**
   * Compression against an earlier version of the same bytes (`base`, a raw-content dictionary):
   * what a chunk delta holds (codecs/chunk-delta.ts). Writes into `dst` (chunkDeltaBound bytes)
   * and returns the length. zstd and deflate have it; a reader must then decompress with the same base.
   */
  compressWithBase?(data: Uint8Array, base: Uint8Array, dst: Uint8Array): number
  decompressWithBase?(data: Uint8Array, base: Uint8Array, rawLength: number, into?: Uint8Array): Uint8Array
}

/** A codec must save at least this share of the bytes, or the block is stored as is. */
const MIN_SAVING = 0.03

export const identity: Compressor = Object.freeze({
  code: AT_REST.identity,
  name: 'identity',
  compress: (data: Uint8Array) => data,
  decompress: (data: Uint8Array) => data,
})

interface ZstdBinding {
  CCtx: new () => {
    compress(dst: Uint8Array, src: Uint8Array, level: number): number
    compressUsingDict(dst: Uint8Array, src: Uint8Array, dict: Uint8Array, level: number): number
  }
  DCtx: new () => {
    decompress(dst: Uint8Array, src: Uint8Array): number
    decompressUsingDict(dst: Uint8Array, src: Uint8Array, dict: Uint8Array): number
  }
  compressBound(n: number): number
}

// undefined = not tried yet, null = tried and unavailable.
let zstd: Compressor | null | undefined

/**
 * zstd level 1: the optional native `zstd-napi` when it loads, else node:zlib's zstd (Node >= 22.15);
 * undefined when neither is there. Both write the same frames (checked on Node 24: identical bytes
 * for 4 KiB pages and a 8 MiB block); zstd-napi goes first because it reuses one context, where
 * node:zlib makes one per call (2x the time per 4 KiB page, measured on Node 24.x).
 */
export function zstdCompressor(): Compressor | undefined {
  if (zstd === undefined) {
    // CKPT_ZSTD=node: node:zlib's zstd even where zstd-napi loads (CI runs Node 24's tests so)
    const which = process.env['CKPT_ZSTD']
    if (which !== undefined && which !== '' && which !== 'node' && which !== 'napi') {
      throw new CkptError('CKPT_CODEC_UNAVAILABLE', `CKPT_ZSTD=${which} is not a zstd implementation (node or napi)`, { codec: 'zstd', CKPT_ZSTD: which })
    }
    zstd = (which === 'node' ? nodeZstdCompressor() ?? loadZstd() : loadZstd() ?? nodeZstdCompressor()) ?? null
  }
  return zstd ?? undefined
}

/** Which implementation zstdCompressor() took: 'zstd-napi', 'node:zlib', or undefined (no zstd). */
export function zstdImplementation(): string | undefined {
  return zstdCompressor()?.impl
}

interface NodeZstd {
  zstdCompressSync(data: Uint8Array, opts: object): Buffer
  zstdDecompressSync(data: Uint8Array, opts: object): Buffer
}

let nodeZstd: Compressor | null | undefined

/** zstd level 1 via node:zlib (Node >= 22.15 and 23.8); undefined on older Node. */
export function nodeZstdCompressor(): Compressor | undefined {
  if (nodeZstd === undefined) {
    const z = zlib as unknown as Partial<NodeZstd>
    const level = (zlib.constants as Record<string, number>)['ZSTD_c_compressionLevel']
    nodeZstd =
      typeof z.zstdCompressSync !== 'function' || typeof z.zstdDecompressSync !== 'function' || level === undefined
        ? null
        : Object.freeze({
            code: AT_REST.zstd,
            name: 'zstd',
            impl: 'node:zlib',
            // the content size in the frame header, as zstd-napi's one-shot compress writes it
            compress: (data: Uint8Array) => z.zstdCompressSync!(data, { params: { [level]: 1 }, pledgedSrcSize: data.length }),
            // maxOutputLength bounds memory on corrupt input, as the raw DCtx below does; node:zlib
            // stops at the frame's end and ignores bytes after it, which zstd-napi refuses: so does this
            decompress: (data: Uint8Array, rawLength: number) => {
              const r = z.zstdDecompressSync!(data, { maxOutputLength: Math.max(1, rawLength), info: true }) as unknown as { buffer: Buffer; engine: { bytesWritten: number } }
              if (r.engine.bytesWritten !== data.length) throw new Error(`${data.length - r.engine.bytesWritten} bytes after the end of the zstd frame`)
              return r.buffer
            },
            compressWithBase(data: Uint8Array, base: Uint8Array, dst: Uint8Array) {
              const out = z.zstdCompressSync!(data, { params: { [level]: 1 }, pledgedSrcSize: data.length, dictionary: base })
              if (out.length > dst.length) throw new RangeError('zstd frame larger than its bound')
              dst.set(out)
              return out.length
            },
            decompressWithBase(data: Uint8Array, base: Uint8Array, rawLength: number) {
              const r = z.zstdDecompressSync!(data, { maxOutputLength: Math.max(1, rawLength), info: true, dictionary: base }) as unknown as { buffer: Buffer; engine: { bytesWritten: number } }
              if (r.engine.bytesWritten !== data.length) throw new Error(`${data.length - r.engine.bytesWritten} bytes after the end of the zstd frame`)
              return r.buffer
            },
          })
  }
  return nodeZstd ?? undefined
}

function loadZstd(): Compressor | null {
  let binding: ZstdBinding
  try {
    const require = createRequire(import.meta.url)
    binding = require('zstd-napi/binding') as ZstdBinding
  } catch {
    return null
  }
  // One context each, reused: creating a zstd context costs more than compressing a 4 KiB page.
  // The raw CCtx writing into a reused buffer is 20-35% faster on 4 KiB pages than the high-level
  // Compressor (measured: 160-202 vs 134-147 MiB/s), with identical frames.
  const cctx = new binding.CCtx()
  let dst = Buffer.allocUnsafe(binding.compressBound(65536))
  // The raw DCtx rather than the high-level Decompressor, which allocates whatever size a (possibly
  // corrupt) frame header claims; here the output buffer is bounded by the recorded raw length.
  const dctx = new binding.DCtx()
  return Object.freeze({
    code: AT_REST.zstd,
    name: 'zstd',
    impl: 'zstd-napi',
    compress(data: Uint8Array) {
      const bound = binding.compressBound(data.length)
      if (dst.length < bound) dst = Buffer.allocUnsafe(bound)
      const n = cctx.compress(dst, data, 1)
      return Uint8Array.prototype.slice.call(dst, 0, n)
    },
    compressInto(data: Uint8Array, out: Uint8Array) {
      return cctx.compress(out, data, 1)
    },
    maxCompressedLength(n: number) {
      return binding.compressBound(n)
    },
    decompress(data: Uint8Array, rawLength: number, into?: Uint8Array) {
      const out = into ?? Buffer.allocUnsafe(rawLength)
      const n = dctx.decompress(out, data)
      return n === rawLength ? out : out.subarray(0, n)
    },
    compressWithBase(data: Uint8Array, base: Uint8Array, out: Uint8Array) {
      return cctx.compressUsingDict(out, data, base, 1)
    },
    decompressWithBase(data: Uint8Array, base: Uint8Array, rawLength: number, into?: Uint8Array) {
      const out = into ?? Buffer.allocUnsafe(rawLength)
      const n = dctx.decompressUsingDict(out, data, base)
      return n === rawLength ? out : out.subarray(0, n)
    },
  })
}

const deflate: Compressor = Object.freeze({
  code: AT_REST.deflate,
  name: 'deflate',
  compress: (data: Uint8Array) => deflateRawSync(data, { level: 1 }),
  decompress(data: Uint8Array, rawLength: number) {
    // maxOutputLength bounds memory on corrupt input; info exposes the bytes consumed so trailing garbage is caught.
    const r = inflateRawSync(data, { maxOutputLength: Math.max(1, rawLength), info: true }) as unknown as {
      buffer: Buffer
      engine: { bytesWritten: number }
    }
    if (r.engine.bytesWritten !== data.length) throw new Error('trailing bytes after the deflate stream')
    return r.buffer
  },
  // deflate's window is 32 KiB: the dictionary is the base's last 32 KiB
  compressWithBase(data: Uint8Array, base: Uint8Array, dst: Uint8Array) {
    const out = deflateRawSync(data, { level: 1, dictionary: base.subarray(Math.max(0, base.length - 32768)) })
    if (out.length > dst.length) throw new RangeError('deflate stream larger than its bound')
    dst.set(out)
    return out.length
  },
  decompressWithBase(data: Uint8Array, base: Uint8Array, rawLength: number) {
    const r = inflateRawSync(data, { maxOutputLength: Math.max(1, rawLength), info: true, dictionary: base.subarray(Math.max(0, base.length - 32768)) }) as unknown as {
      buffer: Buffer
      engine: { bytesWritten: number }
    }
    if (r.engine.bytesWritten !== data.length) throw new Error('trailing bytes after the deflate stream')
    return r.buffer
  },
})

/** raw deflate level 1 via node:zlib: always available, the fallback. */
export function deflateCompressor(): Compressor {
  return deflate
}

/** Compressor to WRITE with: zstd if it loads, else deflate; env CKPT_COMPRESS=zstd|deflate|identity forces one. */
export function defaultCompressor(): Compressor {
  const forced = process.env['CKPT_COMPRESS']
  if (forced === undefined || forced === '') return zstdCompressor() ?? deflate
  switch (forced) {
    case 'identity':
      return identity
    case 'deflate':
      return deflate
    case 'zstd': {
      const z = zstdCompressor()
      if (z) return z
      throw new CkptError('CKPT_CODEC_UNAVAILABLE', 'CKPT_COMPRESS=zstd but neither node:zlib (Node >= 22.15) nor the optional zstd-napi package has zstd', {
        codec: 'zstd',
      })
    }
    default:
      throw new CkptError('CKPT_CODEC_UNAVAILABLE', `CKPT_COMPRESS=${JSON.stringify(forced)}: expected zstd, deflate or identity`, {
        codec: forced,
      })
  }
}

/** Compressor able to READ a given at-rest code (identity/zstd/deflate). Node deltas are the store's job. */
export function compressorFor(code: number): Compressor {
  if (typeof code !== 'number') throw new TypeError('compressorFor: code must be a number')
  switch (code) {
    case AT_REST.identity:
      return identity
    case AT_REST.deflate:
      return deflate
    case AT_REST.zstd: {
      const z = zstdCompressor()
      if (z) return z
      throw new CkptError(
        'CKPT_CODEC_UNAVAILABLE',
        'block is zstd-compressed but this Node has no zstd in node:zlib (Node >= 22.15) and the optional zstd-napi package cannot be loaded; install zstd-napi to read it',
        { codec: code },
      )
    }
    case AT_REST.nodeDelta:
      throw new CkptError('CKPT_CODEC_UNAVAILABLE', 'node deltas are rebuilt by the store, not decompressed', { codec: code })
    case AT_REST.chunkDelta:
      throw new CkptError('CKPT_CODEC_UNAVAILABLE', 'chunk deltas are opened with their base (codecs/chunk-delta.ts), not decompressed alone', { codec: code })
    default:
      throw new CkptError('CKPT_CODEC_UNAVAILABLE', `unknown at-rest codec ${code}`, { codec: code })
  }
}

/** Compress with c, falling back to identity unless that saves at least 3%. */
export function compressBlock(c: Compressor, data: Uint8Array): { code: number; bytes: Uint8Array } {
  if (!(data instanceof Uint8Array)) throw new TypeError('compressBlock: data must be a Uint8Array')
  if (c.code !== AT_REST.identity && data.length > 0) {
    const out = c.compress(data)
    if (out.length <= data.length * (1 - MIN_SAVING)) return { code: c.code, bytes: out }
  }
  return { code: AT_REST.identity, bytes: data }
}

/** An upper bound of the at-rest payload compressBlockInto() may write for a block of n bytes. */
export function maxBlockPayload(c: Compressor, n: number): number {
  return Math.max(n, c.maxCompressedLength ? c.maxCompressedLength(n) : 0)
}

/**
 * compressBlock() writing the payload into `dst` at `at` (room for maxBlockPayload() bytes): returns
 * the at-rest code and the payload length. Identical payloads to compressBlock().
 */
export function compressBlockInto(c: Compressor, data: Uint8Array, dst: Uint8Array, at: number): { code: number; length: number } {
  if (c.code !== AT_REST.identity && data.length > 0) {
    let n: number
    if (c.compressInto && c.maxCompressedLength) n = c.compressInto(data, dst.subarray(at, at + c.maxCompressedLength(data.length)))
    else {
      const out = c.compress(data)
      n = out.length
      if (n <= data.length * (1 - MIN_SAVING)) dst.set(out, at)
    }
    if (n <= data.length * (1 - MIN_SAVING)) return { code: c.code, length: n }
  }
  dst.set(data, at)
  return { code: AT_REST.identity, length: data.length }
}

/** Decompress and check the length; corrupt input of any kind is CKPT_BAD_PACK. */
export function decompressBlock(code: number, bytes: Uint8Array, rawLength: number, into?: Uint8Array): Uint8Array {
  if (!(bytes instanceof Uint8Array)) throw new TypeError('decompressBlock: bytes must be a Uint8Array')
  if (!Number.isSafeInteger(rawLength) || rawLength < 0) throw new TypeError('decompressBlock: rawLength must be a non-negative integer')
  return decompressWith(compressorFor(code), bytes, rawLength, into)
}

/** decompressBlock with a given compressor (an implementation of the codec), under the same contract. */
export function decompressWith(c: Compressor, bytes: Uint8Array, rawLength: number, into?: Uint8Array): Uint8Array {
  const code = c.code
  let out: Uint8Array
  try {
    out = c.decompress(bytes, rawLength, into && into.length === rawLength ? into : undefined)
  } catch (err) {
    throw new CkptError('CKPT_BAD_PACK', `corrupt ${c.name} block: ${err instanceof Error ? err.message : String(err)}`, { codec: code, rawLength }, err)
  }
  if (out.length !== rawLength) {
    throw new CkptError('CKPT_BAD_PACK', `${c.name} block decompressed to ${out.length} bytes, expected ${rawLength}`, {
      codec: code,
      rawLength,
      length: out.length,
    })
  }
  return out
}
