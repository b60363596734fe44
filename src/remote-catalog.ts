/**
 * Reading a remote's index and catalog (SPEC.md §22.4), for push, pull and gc: its index segments
 * (fetched once, checked against their names, kept in the store) and a timeline's catalog segments
 * (kept too: their keys name their hashes), and the checkpoints they list.
 */
import { blake3 } from '../codecs/blake3.js'
import { CkptError } from '../codecs/errors.js'
import { catalogPrefix, decodeCatalogSegment, parseCatalogKey, segmentKey, toHex, type CatalogSegment } from '../codecs/remote-format.js'
import { RemoteBlocks } from '../store/index.js'
import type { StoreContext } from './context.js'
import type { OpenedRemote } from './remote.js'

/** What a push learnt of a remote's index: the segments this store knows, fetched when new. */
export async function syncRemoteIndex(ctx: StoreContext, r: OpenedRemote, signal?: AbortSignal): Promise<RemoteBlocks> {
  const blocks = ctx.repo.blocks
  const table = (blocks.remote ??= RemoteBlocks.empty(ctx.dir))
  table.register(r.config.id, r.url, r.env)
  const names: string[] = []
  for await (const o of r.objects.list('index/', { signal })) {
    const name = o.key.slice('index/'.length)
    if (/^[0-9a-f]{64}$/.test(name) && !table.hasSegment(name)) names.push(name)
  }
  await fetchSegments(r, table, names, signal)
  return table
}

/** Fetches index segments (several at once), checks each against its name, saves it in the store. */
export async function fetchSegments(r: OpenedRemote, table: RemoteBlocks, names: readonly string[], signal?: AbortSignal): Promise<void> {
  let next = 0
  const one = async () => {
    while (next < names.length) {
      const name = names[next++]!
      if (table.hasSegment(name)) continue
      const bytes = await r.objects.get(segmentKey(name), { signal })
      if (!bytes) throw new CkptError('CKPT_REMOTE_UNAVAILABLE', `index segment ${name} is missing from ${r.url}`, { remote: r.url, key: segmentKey(name) })
      if (toHex(blake3(bytes)) !== name) throw new CkptError('CKPT_HASH_MISMATCH', `index segment ${name} on ${r.url} does not match its name`, { remote: r.url, key: segmentKey(name) })
      table.saveSegment(r.config.id, name, bytes)
    }
  }
  await Promise.all(Array.from({ length: Math.min(8, names.length) }, one))
}

/** The catalog segments of a timeline on the remote (each fetched once, then read from the store's copy). */
export async function catalogSegments(r: OpenedRemote, timeline: string, signal?: AbortSignal, keep?: RemoteBlocks): Promise<{ key: string; seg: CatalogSegment }[]> {
  const keys: string[] = []
  for await (const o of r.objects.list(catalogPrefix(timeline), { signal })) if (parseCatalogKey(o.key)) keys.push(o.key)
  const out: { key: string; seg: CatalogSegment }[] = new Array(keys.length)
  let next = 0
  const one = async () => {
    while (next < keys.length) {
      const k = next++
      const key = keys[k]!
      // a catalog segment's key names its hash: a copy kept from an earlier push or pull that still hashes to it is it
      const kept = keep?.keptObject(r.config.id, key)
      if (kept && toHex(blake3(kept)).startsWith(key.slice(-16))) {
        out[k] = { key, seg: decodeCatalogSegment(kept, key) }
        continue
      }
      const bytes = await r.objects.get(key, { signal })
      if (!bytes) continue // removed by a compaction since the listing: its successor lists the same
      out[k] = { key, seg: decodeCatalogSegment(bytes, key) }
      keep?.keepObject(r.config.id, key, bytes)
    }
  }
  await Promise.all(Array.from({ length: Math.min(16, keys.length) }, one))
  return out.filter((x) => x !== undefined)
}

/** The remote's checkpoints of a timeline, by vtime (text), from its catalog segments: those listed and not dropped. */
export function remoteCheckpoints(segs: { key: string; seg: CatalogSegment }[]): Map<string, string> {
  const at = new Map<string, string>()
  for (const { key, seg } of segs) {
    for (const c of seg.checkpoints) {
      const was = at.get(c.vtime)
      if (was && was !== c.cid) throw new CkptError('CKPT_BAD_REMOTE', `the remote's catalog names two checkpoints at vtime ${c.vtime} of ${seg.timeline} (${key})`, { key })
      at.set(c.vtime, c.cid)
    }
  }
  for (const [v, cid] of droppedCheckpoints(segs)) if (at.get(v) === cid) at.delete(v)
  return at
}

/** Checkpoints a thinning of the remote dropped, by vtime (text). */
export function droppedCheckpoints(segs: { key: string; seg: CatalogSegment }[]): Map<string, string> {
  const out = new Map<string, string>()
  for (const { seg } of segs) for (const c of seg.dropped ?? []) out.set(c.vtime, c.cid)
  return out
}

