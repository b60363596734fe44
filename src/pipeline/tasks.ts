/**
 * The CPU work of ingest and restore, as plain functions over byte views. They run inside worker
 * threads (worker.ts) or inline on the calling thread when workers are unavailable; same code either way.
 */
import { blake3 } from '../../codecs/blake3.js'
import { compressBlock, decompressBlock, defaultCompressor, type Compressor } from '../../codecs/compress.js'

export interface HashTask {
  op: 'hash'
  data: Uint8Array
  /** chunk boundaries inside data: chunk i is data[offsets[i], offsets[i] + lengths[i]) */
  offsets: Uint32Array
  lengths: Uint32Array
}
export interface HashResult {
  /** 32 bytes per chunk; untouched (zero) for holes */
  digests: Uint8Array
  /** 1 where the chunk is all zero (a hole: not hashed, not stored) */
  zero: Uint8Array
}

export interface CompressTask {
  op: 'compress'
  data: Uint8Array
  offsets: Uint32Array
  lengths: Uint32Array
}
export interface CompressResult {
  /** concatenated at-rest payloads */
  out: Uint8Array
  outLengths: Uint32Array
  codes: Uint8Array
}

export interface DecompressTask {
  op: 'decompress'
  data: Uint8Array
  offsets: Uint32Array
  lengths: Uint32Array
  codes: Uint8Array
  rawLengths: Uint32Array
  /** expected digests, 32 bytes each; a mismatch is reported by index */
  digests: Uint8Array
}
export interface DecompressResult {
  out: Uint8Array
  /** index of the first chunk whose bytes do not hash to its digest, or -1 */
  bad: number
  /** set when decompression itself failed */
  error?: string
}

export type Task = HashTask | CompressTask | DecompressTask
export type TaskResult = HashResult | CompressResult | DecompressResult

const ZERO = new Uint8Array(1 << 20)

function isZero(b: Uint8Array): boolean {
  for (let at = 0; at < b.length; at += ZERO.length) {
    const n = Math.min(ZERO.length, b.length - at)
    if (!Buffer.from(b.buffer, b.byteOffset + at, n).equals(ZERO.subarray(0, n))) return false
  }
  return true
}

let compressor: Compressor | undefined

export function runTask(t: Task): TaskResult {
  switch (t.op) {
    case 'hash': {
      const n = t.offsets.length
      const digests = new Uint8Array(n * 32)
      const zero = new Uint8Array(n)
      for (let i = 0; i < n; i++) {
        const c = t.data.subarray(t.offsets[i]!, t.offsets[i]! + t.lengths[i]!)
        if (isZero(c)) zero[i] = 1
        else digests.set(blake3(c), i * 32)
      }
      return { digests, zero }
    }
    case 'compress': {
      compressor ??= defaultCompressor()
      const n = t.offsets.length
      const parts: Uint8Array[] = []
      const outLengths = new Uint32Array(n)
      const codes = new Uint8Array(n)
      let total = 0
      for (let i = 0; i < n; i++) {
        const r = compressBlock(compressor, t.data.subarray(t.offsets[i]!, t.offsets[i]! + t.lengths[i]!))
        parts.push(r.bytes)
        outLengths[i] = r.bytes.length
        codes[i] = r.code
        total += r.bytes.length
      }
      const out = new Uint8Array(total)
      let at = 0
      for (const p of parts) {
        out.set(p, at)
        at += p.length
      }
      return { out, outLengths, codes }
    }
    case 'decompress': {
      const n = t.offsets.length
      let total = 0
      for (let i = 0; i < n; i++) total += t.rawLengths[i]!
      const out = new Uint8Array(total)
      let at = 0
      for (let i = 0; i < n; i++) {
        let raw: Uint8Array
        try {
          raw = decompressBlock(t.codes[i]!, t.data.subarray(t.offsets[i]!, t.offsets[i]! + t.lengths[i]!), t.rawLengths[i]!)
        } catch (err) {
          return { out, bad: i, error: (err as Error).message }
        }
        const d = blake3(raw)
        for (let j = 0; j < 32; j++) if (d[j] !== t.digests[i * 32 + j]) return { out, bad: i }
        out.set(raw, at)
        at += raw.length
      }
      return { out, bad: -1 }
    }
  }
}

/** ArrayBuffers a result can hand back without copying (never shared memory). */
export function transferables(r: TaskResult): ArrayBuffer[] {
  const list: ArrayBuffer[] = []
  for (const v of Object.values(r)) {
    if (v instanceof Uint8Array || v instanceof Uint32Array) {
      if (v.buffer instanceof ArrayBuffer && !list.includes(v.buffer)) list.push(v.buffer)
    }
  }
  return list
}
