/**
 * How much a store holds against what it stores (what `ckpt stats` prints): the logical bytes of its
 * checkpoints, the bytes on disk, and the dedup ratio between them.
 */
import type { CkptStore, StoreStats } from './store.js'

export interface StoreUsage extends StoreStats {
  /** sum over the catalog's checkpoints of their regions' and blobs' sizes (a CID catalogued in two timelines counts twice) */
  logicalBytes: number
  /** bytes on disk: pack bytes + index bytes */
  storedBytes: number
  /** logicalBytes / packBytes; null while the store has no pack bytes */
  dedupRatio: number | null
}

/** store.stats() with the logical bytes (one manifest read per checkpoint of store.log()) and the dedup ratio. */
export async function storeUsage(store: CkptStore): Promise<StoreUsage> {
  const s = await store.stats()
  let logicalBytes = 0
  for await (const e of store.log()) {
    const m = await store.manifest(e.cid)
    for (const r of Object.values(m.regions)) logicalBytes += r.size
    for (const b of Object.values(m.blobs)) logicalBytes += b.size
  }
  const storedBytes = s.packBytes + s.indexBytes
  const dedupRatio = s.packBytes > 0 ? logicalBytes / s.packBytes : null
  return { ...s, storedBytes, logicalBytes, dedupRatio }
}
