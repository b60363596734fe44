/**
 * Bounded parallel work over a stream of items: ingest's chunk batches and restore's read jobs both
 * run through it.
 */
import type { WorkerPool } from './worker-pool.js'

/**
 * Runs work items with bounded parallelism (by default twice the pool size in flight), so reading,
 * hashing and compressing overlap while memory stays bounded. The first failure (of `next` or of a work item)
 * stops taking items and is thrown once everything in flight has settled. Ingest and restore share it.
 */
export async function runBatches<T>(pool: WorkerPool, next: () => Promise<T | undefined>, work: (b: T) => Promise<void>, limit = Math.max(2, pool.threads * 2)): Promise<void> {
  const inflight = new Set<Promise<void>>()
  let failure: unknown
  for (;;) {
    if (failure) break
    let b: T | undefined
    try {
      b = await next()
    } catch (err) {
      failure ??= err
      break
    }
    if (b === undefined) break
    const p: Promise<void> = work(b).then(
      () => void inflight.delete(p),
      (err) => {
        inflight.delete(p)
        failure ??= err
      },
    )
    inflight.add(p)
    if (inflight.size >= limit) await Promise.race(inflight)
  }
  await Promise.all(inflight)
  if (failure) throw failure
}
