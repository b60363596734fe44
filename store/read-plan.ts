/**
 * Read plans: where the entries of blocks at known locations are, in the form a worker thread reads
 * them (src/pipeline/tasks.ts, ReadTask). When every entry is in a pack the backend keeps as a local
 * file, and none is still in the block store's write buffer, the plan names the files and the entries'
 * offsets: the worker preads each entry (header first) itself, so the fewest bytes pass through the
 * caller's thread. Otherwise (memory packs, entries not yet flushed, packs elsewhere) the payloads are
 * read here, checked against their locations, and handed over concatenated. Chunks stored as deltas
 * (codec 4) are resolved here, their chains read through the block store, and go along as their
 * bytes (`resolved`): a worker has no index to find a base in.
 */
import type { CidBytes } from '../codecs/cid.js'
import { AT_REST } from '../codecs/compress.js'
import { resolveChunk } from './chunk-chain.js'
import type { BlockLocation, BlockStore } from './block-store.js'

export interface ReadPlan {
  /** pack files the worker reads; with fileIdx (per block, an index into files) */
  files?: string[]
  fileIdx?: Uint32Array
  /** the payloads, concatenated, when the entries are not all in files */
  payloads?: Uint8Array
  /** per block: its entry's offset in its pack file, or its payload's offset in `payloads` */
  offsets: Float64Array
  /** chunk deltas' bytes, resolved here (the worker hashes them), concatenated; with resolvedAt */
  resolved?: Uint8Array
  /** per block: its bytes' offset in `resolved`, or -1 (read from its entry) */
  resolvedAt?: Float64Array
}

/** The chunk deltas among `locs` resolved (block store reads, chains and all; the result not hashed yet), or undefined if none. */
function resolveDeltas(blocks: BlockStore, cids: readonly CidBytes[], locs: readonly BlockLocation[]): Pick<ReadPlan, 'resolved' | 'resolvedAt'> {
  let any = false
  for (let k = 0; k < locs.length && !any; k++) any = locs[k]!.codec === AT_REST.chunkDelta
  if (!any) return {}
  const resolvedAt = new Float64Array(locs.length).fill(-1)
  const parts: Uint8Array[] = []
  let at = 0
  for (let k = 0; k < locs.length; k++) {
    if (locs[k]!.codec !== AT_REST.chunkDelta) continue
    // the worker hashes the result (a mismatch is then resolved again here, proving each version)
    const raw = resolveChunk(blocks, cids[k]!, locs[k]!, false)
    parts.push(raw)
    resolvedAt[k] = at
    at += raw.length
  }
  return { resolved: Buffer.concat(parts), resolvedAt }
}

/** How to read `cids` at `locs` (each location is checked against the store's packs first). */
export function planReads(blocks: BlockStore, cids: readonly CidBytes[], locs: readonly BlockLocation[]): ReadPlan {
  const n = cids.length
  const offsets = new Float64Array(n)
  // pack paths once per pack, not per block
  const paths = new Map<number, string | undefined>()
  const pathOf = (pack: number) => {
    if (!paths.has(pack)) paths.set(pack, blocks.filePath(pack))
    return paths.get(pack)
  }
  for (let k = 0; k < n; k++) blocks.checkLocation(cids[k]!, locs[k]!)
  let inFiles = true
  for (let k = 0; k < n && inFiles; k++) inFiles = pathOf(locs[k]!.pack) !== undefined && !blocks.inWriteBuffer(locs[k]!)
  if (inFiles) {
    const files: string[] = []
    const fileOf = new Map<number, number>()
    const fileIdx = new Uint32Array(n)
    for (let k = 0; k < n; k++) {
      const loc = locs[k]!
      let f = fileOf.get(loc.pack)
      if (f === undefined) fileOf.set(loc.pack, (f = files.push(pathOf(loc.pack)!) - 1))
      fileIdx[k] = f
      offsets[k] = loc.offset
    }
    return { files, fileIdx, offsets, ...resolveDeltas(blocks, cids, locs) }
  }
  const payloads: Uint8Array[] = []
  let at = 0
  for (let k = 0; k < n; k++) {
    // a chunk delta's entry is read once, by resolveDeltas: its payload is not what the worker opens
    const p = locs[k]!.codec === AT_REST.chunkDelta ? new Uint8Array(0) : blocks.readAt(cids[k]!, locs[k]!)
    payloads.push(p)
    offsets[k] = at
    at += p.length
  }
  return { payloads: Buffer.concat(payloads), offsets, ...resolveDeltas(blocks, cids, locs) }
}
