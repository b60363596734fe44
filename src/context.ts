/**
 * What the parts of the library share of one open store (the repository, the worker pool, the
 * one-at-a-time pipeline): CkptStore makes one and hands it to timelines, lifecycle operations, gc,
 * bundles, verify and repair, which import nothing of CkptStore itself (so no module imports back
 * into the store that uses it).
 */
import { randomBytes } from 'node:crypto'
import type { CidBytes } from '../codecs/cid.js'
import type { Manifest } from '../codecs/manifest.js'
import type { Repository, TimelineRecord } from '../store/index.js'
import type { WorkerPool } from './pipeline/worker-pool.js'

export interface StoreContext {
  readonly repo: Repository
  readonly pool: WorkerPool
  readonly dir: string
  /** CKPT_CLOSED once the store is closing */
  checkOpen(): void
  /** runs fn in the one-at-a-time pipeline, counting `bytes` of copies as pending until it is done */
  enqueue<T>(bytes: number, fn: () => Promise<T>): Promise<T>
  hasRoom(bytes: number): boolean
  waitForRoom(bytes: number): Promise<void>
  /** runs fn alone in the pipeline (no checkpoint commits meanwhile): imports, repairs, gc, catalog changes */
  exclusive<T>(fn: () => Promise<T>): Promise<T>
  /** a reference (CID, CID text, TIMELINE@VTIME, TIMELINE, ref:NAME) as CID bytes */
  resolve(ref: unknown): Promise<CidBytes>
  /** a checkpoint's decoded manifest (cached) */
  manifestOf(cid: CidBytes): Promise<Manifest>
  /** open timeline handles learn of checkpoints added or removed behind their back, or of a changed record */
  timelinesChanged(names: Iterable<string>, change?: { forget?: CidBytes[]; record?: TimelineRecord }): Promise<void>
  /** refs changed: handles that thin themselves re-read which checkpoints are protected */
  protectionChanged(): Promise<void>
  /** heads of open timeline handles: what their next dirty hints build on (gc roots) */
  openHeads(): Promise<CidBytes[]>
}

/** A fresh timeline lineage: 128 random bits as 32 hex digits. */
export function newLineage(): string {
  return randomBytes(16).toString('hex')
}
