/**
 * The worker's side of chunk deltas (codecs/chunk-delta.ts): a dirty chunk compressed against its
 * previous version, which must first prove to be that version (its bytes hash to the tree's digest).
 */
import { blake3Into } from '../../codecs/blake3.js'
import { BLAKE3, DIGEST_LENGTH, RAW } from '../../codecs/cid.js'
import { AT_REST, compressBlockInto, type Compressor } from '../../codecs/compress.js'
import { chunkDeltaBound, encodeChunkDeltaInto } from '../../codecs/chunk-delta.js'

let deltaScratch = Buffer.allocUnsafe(0)
const baseDigest = new Uint8Array(32)
const baseCid = new Uint8Array(36)
baseCid.set([0x01, RAW, BLAKE3, DIGEST_LENGTH])

/**
 * Chunk i stored against its previous version where that is smaller (the payload at `out[at]`):
 * the base's bytes must hash to previous[i] (else null: stored whole, counted); a delta a quarter of
 * the chunk or less is kept without compressing the chunk alone too. undefined: stored whole.
 */
export function againstBase(c: Compressor, chunk: Uint8Array, base: Uint8Array, previous: Uint8Array, i: number, baseDepth: number, out: Uint8Array, at: number): { code: number; length: number; depth: number } | null | undefined {
  if (base.length !== chunk.length) return undefined
  blake3Into(base, baseDigest, 0)
  for (let j = 0; j < 32; j++) if (baseDigest[j] !== previous[i * 32 + j]) return null
  const bound = chunkDeltaBound(chunk.length)
  if (deltaScratch.length < bound) deltaScratch = Buffer.allocUnsafe(bound)
  baseCid.set(baseDigest, 4)
  const n = encodeChunkDeltaInto(c, baseCid, base, chunk, deltaScratch, 0)
  if (n < 0) return undefined
  const alone = n <= chunk.length >> 2 ? undefined : compressBlockInto(c, chunk, out, at)
  if (alone && alone.length <= n) return { ...alone, depth: 0 }
  out.set(deltaScratch.subarray(0, n), at)
  return { code: AT_REST.chunkDelta, length: n, depth: baseDepth + 1 }
}
