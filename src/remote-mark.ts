/**
 * The blocks checkpoints reach, through the remote's cache where this store has no copy: remote gc's
 * mark, and what a full pull copies. Tree nodes are read a level of a tree at a time, each level's
 * remote ranges fetched together (one coalesced prefetch).
 */
import { cidKey, type CidBytes } from '../codecs/cid.js'
import { AT_REST } from '../codecs/compress.js'
import { deltaBaseCid } from '../codecs/node-delta.js'
import type { BlockStore } from '../store/index.js'
import type { StoreContext } from './context.js'
import { childCid } from './node-compare.js'
import { Geometry } from './region-tree.js'

/** Every block the checkpoints reach (manifests, tree nodes, chunks, blob chunks), as CID keys. */
export async function mark(ctx: StoreContext, roots: CidBytes[], opts: { signal?: AbortSignal; onProgress?: (p: { phase: 'mark'; done: number; total: number }) => void }): Promise<Set<string>> {
  const blocks = ctx.repo.blocks
  const live = new Set<string>()
  // every checkpoint's trees at once, a level at a time: each level is one coalesced prefetch
  const waves = new Map<number, CidBytes[]>()
  const add = (level: number, cid: CidBytes) => {
    const key = cidKey(cid)
    if (live.has(key)) return
    live.add(key)
    if (level === 0) return
    let w = waves.get(level)
    if (!w) waves.set(level, (w = []))
    w.push(cid)
  }
  await blocks.locateMany(roots)
  for (let k = 0; k < roots.length; k++) {
    opts.signal?.throwIfAborted()
    opts.onProgress?.({ phase: 'mark', done: k, total: roots.length })
    const root = roots[k]!
    if (live.has(cidKey(root))) continue
    live.add(cidKey(root))
    const m = await ctx.manifestOf(root)
    for (const b of Object.values(m.blobs)) for (const c of b.chunks) add(0, c.cid)
    for (const reg of Object.values(m.regions)) if (reg.root) add(new Geometry(reg.size, reg.chunkSize, reg.fanout).height, reg.root)
  }
  for (let level = Math.max(0, ...waves.keys()); level >= 1; level--) {
    const wave = waves.get(level) ?? []
    waves.delete(level)
    opts.signal?.throwIfAborted()
    await blocks.locateMany(wave)
    await prefetchChains(blocks, wave)
    for (const cid of wave) {
      const e = blocks.getNode(cid)
      for (let s = 0; s < e.count; s++) if (e.codecs[s]) add(level - 1, childCid(e, s))
    }
  }
  return live
}

/**
 * The delta chains of nodes a remote holds, fetched a hop at a time for all of them (their payloads
 * name their bases): reading the nodes then costs no round trip per hop.
 */
export async function prefetchChains(blocks: BlockStore, cids: readonly CidBytes[]): Promise<void> {
  let todo = cids
  for (let hop = 0; hop < 64 && todo.length; hop++) {
    const next: CidBytes[] = []
    for (const cid of todo) {
      const loc = blocks.find(cid)
      if (!loc || loc.codec !== AT_REST.nodeDelta || !blocks.remote?.isRemote(loc.pack)) continue
      next.push(deltaBaseCid(blocks.readStored(cid).payload))
    }
    if (next.length) await blocks.locateMany(next)
    todo = next
  }
}
