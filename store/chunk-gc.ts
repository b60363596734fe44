/**
 * gc and chunk deltas (SPEC.md §14, "Chunk deltas"): a live chunk stored as a delta whose base is not
 * live (the base was a version of its page that only thinned checkpoints held) would keep its chain
 * of dead bases alive. Before the sweep, such a chunk is staged anew, as the nodes of src/gc.ts are:
 * as a delta against the first live version down its chain (the chain stays at most
 * CHUNK_DELTA_MAX_DEPTH) where that is smaller than alone, else whole; its chain of dead bases is
 * marked apart (the caller's keepBase), live only if the plan drops what was staged.
 */
import type { CidBytes } from '../codecs/cid.js'
import { CHUNK_DELTA_MAX_DEPTH, chunkDeltaBound, encodeChunkDeltaInto } from '../codecs/chunk-delta.js'
import { AT_REST, compressBlock } from '../codecs/compress.js'
import { ENTRY_HEADER_SIZE } from '../codecs/pack-format.js'
import { decodeLocation, type BlockLocation, type BlockStore } from './block-store.js'
import { chunkBaseOf, MAX_CHUNK_CHAIN, resolveChunk } from './chunk-chain.js'
import { blockKeyCid, blockRange } from './keys.js'
import type { KV } from './kv.js'
import { Slices } from './slices.js'

export interface ChunkChainOptions {
  isLive: (cid: Uint8Array, at?: number) => boolean
  isBaseOnly: (cid: Uint8Array, at?: number) => boolean
  keepBase: (cid: CidBytes) => void
  dryRun: boolean
}

/** What the pass staged: chunks stored anew and their entries' bytes. */
export interface ChunkChainSummary {
  reencoded: number
  reencodedBytes: number
}

/** One pass over the index: each live chunk delta whose base is not live is staged anew (not in a dry run). */
export async function restageChunkDeltas(kv: KV, blocks: BlockStore, opts: ChunkChainOptions): Promise<ChunkChainSummary> {
  const truly = (cid: Uint8Array) => opts.isLive(cid) && !opts.isBaseOnly(cid)
  const out = { reencoded: 0, reencodedBytes: 0 }
  const slices = new Slices()
  for await (const [k, v] of kv.iterate(blockRange)) {
    if (v.length !== 22 || v[20] !== AT_REST.chunkDelta) continue
    const cid = blockKeyCid(k)
    if (!truly(cid)) continue
    if (slices.due()) await slices.next()
    const loc = decodeLocation(v)
    // the dead versions down the chain, to the first live one (or the chain's whole end, dead too)
    let at: CidBytes = cid
    let atLoc: BlockLocation | undefined = loc
    let live: { cid: CidBytes; loc: BlockLocation } | undefined
    let dead = 0
    for (let hops = 0; atLoc && atLoc.codec === AT_REST.chunkDelta && hops <= MAX_CHUNK_CHAIN; hops++) {
      const base = chunkBaseOf(blocks, at, atLoc)
      const baseLoc = blocks.locate(base)
      if (truly(base)) {
        if (baseLoc) live = { cid: base, loc: baseLoc }
        break
      }
      opts.keepBase(base)
      dead++
      at = base
      atLoc = baseLoc
    }
    // its base is live: nothing to do (that base's own chain is judged as its own entry)
    if (dead === 0 || opts.dryRun) continue
    const size = restage(blocks, cid, loc, live)
    out.reencoded++
    out.reencodedBytes += ENTRY_HEADER_SIZE + size
  }
  return out
}

/** The chunk stored anew against `live` (a delta where smaller and short enough) or whole; its payload's length. */
function restage(blocks: BlockStore, cid: CidBytes, loc: BlockLocation, live: { cid: CidBytes; loc: BlockLocation } | undefined): number {
  const raw = resolveChunk(blocks, cid, loc)
  const alone = compressBlock(blocks.compressor, raw)
  const depth = live ? (live.loc.codec === AT_REST.chunkDelta ? live.loc.depth : 0) + 1 : CHUNK_DELTA_MAX_DEPTH + 1
  if (live && depth <= CHUNK_DELTA_MAX_DEPTH) {
    const dst = new Uint8Array(chunkDeltaBound(raw.length))
    const n = encodeChunkDeltaInto(blocks.compressor, live.cid, resolveChunk(blocks, live.cid, live.loc), raw, dst, 0)
    if (n > 0 && n < alone.bytes.length) {
      blocks.put(cid, AT_REST.chunkDelta, dst.subarray(0, n), raw.length, { depth, replace: true })
      return n
    }
  }
  blocks.put(cid, alone.code, alone.bytes, raw.length, { replace: true })
  return alone.bytes.length
}
