/**
 * What a store holds against what it stores (CkptStore.stats(), printed by `ckpt stats`): counts, the
 * bytes on disk, the logical bytes of the catalog's checkpoints and the dedup ratio between them.
 */
import fs from 'node:fs'
import path from 'node:path'
import type { CidBytes } from '../codecs/cid.js'
import type { Manifest } from '../codecs/manifest.js'
import type { BlockStore, Repository } from '../store/index.js'

export interface StoreStats {
  timelines: number
  checkpoints: number
  blocks: number
  packs: number
  /** bytes in pack files (entries, headers, footers) */
  packBytes: number
  /** bytes of the LevelDB index directory */
  indexBytes: number
  /** in-memory fingerprint filter */
  filterBytes: number
  /** bytes on disk: packBytes + indexBytes */
  storedBytes: number
  /**
   * the sum over the catalog's checkpoints of their regions' and blobs' sizes: what restoring every
   * checkpoint would write (a CID catalogued in two timelines counts twice)
   */
  logicalBytes: number
  /** logicalBytes / packBytes; null while the store has no pack bytes */
  dedupRatio: number | null
}

export function packStats(blocks: BlockStore): { packs: number; bytes: number } {
  let bytes = 0
  for (const [, r] of blocks.packRecords()) bytes += r.committedLength
  return { packs: blocks.packRecords().size, bytes }
}

export function dirBytes(dir: string): number {
  let n = 0
  try {
    for (const f of fs.readdirSync(dir)) {
      const st = fs.statSync(path.join(dir, f))
      if (st.isFile()) n += st.size
    }
  } catch {}
  return n
}

/** The logical bytes of a checkpoint: its regions' and blobs' sizes. */
export function manifestBytes(m: Manifest): number {
  let n = 0
  for (const r of Object.values(m.regions)) n += r.size
  for (const b of Object.values(m.blobs)) n += b.size
  return n
}

/** The store's statistics; `manifest` reads a checkpoint's manifest (one read per catalogued checkpoint). */
export async function storeStats(repo: Repository, manifest: (cid: CidBytes) => Promise<Manifest>): Promise<StoreStats> {
  let timelines = 0
  let checkpoints = 0
  let logicalBytes = 0
  for await (const t of repo.timelines()) {
    timelines++
    for await (const e of repo.checkpoints(t.name)) {
      checkpoints++
      logicalBytes += manifestBytes(await manifest(e.cid))
    }
  }
  const p = packStats(repo.blocks)
  const indexBytes = dirBytes(path.join(repo.dir, 'index'))
  return {
    timelines,
    checkpoints,
    blocks: await repo.blocks.count(),
    packs: p.packs,
    packBytes: p.bytes,
    indexBytes,
    filterBytes: repo.blocks.filterBytes,
    storedBytes: p.bytes + indexBytes,
    logicalBytes,
    dedupRatio: p.bytes > 0 ? logicalBytes / p.bytes : null,
  }
}
