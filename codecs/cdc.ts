/**
 * Content-defined chunking of blobs: FastCDC (Xia et al., USENIX ATC 2016) with normalized chunking
 * level 2. Cut points decide which blocks exist, so they are part of the on-disk format; the rule
 * below is complete enough to reproduce them byte for byte:
 *
 * - Gear table: G[0..255] are the high 32 bits of the first 256 outputs of splitmix64 (state += 0x9e3779b97f4a7c15;
 *   z = state; z = (z ^ z >>> 30) * 0xbf58476d1ce4e5b9; z = (z ^ z >>> 27) * 0x94d049bb133111eb; z ^= z >>> 31; all mod 2^64),
 *   starting from state = GEAR_SEED.
 * - Fingerprint: uint32 h = (h << 1) + G[byte] mod 2^32, reset to 0 at the start of each chunk.
 * - Masks, with b = log2(avgSize): maskS = the top b+2 bits of 32 set, maskL = the top b-2 bits set.
 * - Chunk starting at s with r bytes remaining: if r <= minSize the chunk is the rest. Otherwise hash the bytes at
 *   s+minSize, s+minSize+1, ...; after hashing the byte at i, cut at i (that byte starts the next chunk) when
 *   (h & mask) === 0, using maskS while i < s + min(avgSize, r) and maskL after; with no cut the chunk ends
 *   at s + min(maxSize, r).
 */
import { CkptError } from './errors.js'

export interface CdcOptions { minSize?: number; avgSize?: number; maxSize?: number }

export const CDC_DEFAULTS: Required<CdcOptions> = Object.freeze({ minSize: 16 * 1024, avgSize: 64 * 1024, maxSize: 256 * 1024 })

/** splitmix64 seed of the gear table: ASCII "ckpt_cdc". */
export const GEAR_SEED = 0x636b70745f636463n

const MIN_LIMIT = 64
const MAX_LIMIT = 16 * 1024 * 1024

// BigInt only here, at module load; the scan loop is pure int32 arithmetic.
const GEAR = (() => {
  const M = (1n << 64n) - 1n
  const table = new Int32Array(256)
  let state = GEAR_SEED
  for (let i = 0; i < 256; i++) {
    state = (state + 0x9e3779b97f4a7c15n) & M
    let z = state
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M
    z ^= z >> 31n
    table[i] = Number(z >> 32n) | 0
  }
  return table
})()

function checkOptions(opts: CdcOptions | undefined): Required<CdcOptions> {
  if (opts === undefined) return CDC_DEFAULTS
  if (typeof opts !== 'object' || opts === null) throw new TypeError('cdcCuts: opts must be an object')
  const o = {
    minSize: opts.minSize ?? CDC_DEFAULTS.minSize,
    avgSize: opts.avgSize ?? CDC_DEFAULTS.avgSize,
    maxSize: opts.maxSize ?? CDC_DEFAULTS.maxSize,
  }
  for (const key of ['minSize', 'avgSize', 'maxSize'] as const) {
    if (typeof o[key] !== 'number') throw new TypeError(`cdcCuts: ${key} must be a number`)
    if (!Number.isInteger(o[key])) throw new CkptError('CKPT_BAD_ARGUMENT', `${key} must be an integer`, { [key]: o[key] })
  }
  const { minSize, avgSize, maxSize } = o
  const ok =
    minSize >= MIN_LIMIT && maxSize <= MAX_LIMIT && minSize < avgSize && avgSize < maxSize && (avgSize & (avgSize - 1)) === 0
  if (!ok) {
    throw new CkptError(
      'CKPT_BAD_ARGUMENT',
      `CDC sizes need ${MIN_LIMIT} <= minSize < avgSize < maxSize <= ${MAX_LIMIT} and avgSize a power of two`,
      { minSize, avgSize, maxSize },
    )
  }
  return o
}

/** int32 mask with the top `bits` bits set. */
const topBits = (bits: number): number => ~(-1 >>> bits)

export function cdcCuts(data: Uint8Array, opts?: CdcOptions): number[] {
  if (!(data instanceof Uint8Array)) throw new TypeError('cdcCuts: data must be a Uint8Array')
  const { minSize, avgSize, maxSize } = checkOptions(opts)
  const b = 31 - Math.clz32(avgSize)
  const maskS = topBits(b + 2)
  const maskL = topBits(b - 2)
  const gear = GEAR
  const n = data.length
  const cuts: number[] = []
  let start = 0
  while (start < n) {
    const remaining = n - start
    let cut = n
    if (remaining > minSize) {
      const normal = start + Math.min(avgSize, remaining)
      cut = start + Math.min(maxSize, remaining)
      let h = 0
      let i = start + minSize
      for (; i < normal; i++) {
        h = ((h << 1) + gear[data[i]]) | 0
        if ((h & maskS) === 0) break
      }
      if (i === normal) {
        for (; i < cut; i++) {
          h = ((h << 1) + gear[data[i]]) | 0
          if ((h & maskL) === 0) break
        }
      }
      cut = i
    }
    cuts.push(cut)
    start = cut
  }
  return cuts
}
