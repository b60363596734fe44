/**
 * The blocks checkpoints reach, through the remote's cache where this store has no copy: remote gc's
 * mark, and what a full pull copies. Tree nodes are read a level of a tree at a time, each level's
 * remote ranges fetched together (one coalesced prefetch).
 */
import { cidKey, type CidBytes } from '../codecs/cid.js'
import type { StoreContext } from './context.js'
import { childCid } from './node-compare.js'
import { Geometry } from './region-tree.js'

/** Every block the checkpoints reach (manifests, tree nodes, chunks, blob chunks), as CID keys. */
export async function mark(ctx: StoreContext, roots: CidBytes[], opts: { signal?: AbortSignal; onProgress?: (p: { phase: 'mark'; done: number; total: number }) => void }): Promise<Set<string>> {
  const blocks = ctx.repo.blocks
  const live = new Set<string>()
  await blocks.locateMany(roots)
  for (let k = 0; k < roots.length; k++) {
    opts.signal?.throwIfAborted()
    opts.onProgress?.({ phase: 'mark', done: k, total: roots.length })
    const root = roots[k]!
    if (live.has(cidKey(root))) continue
    live.add(cidKey(root))
    const m = await ctx.manifestOf(root)
    for (const b of Object.values(m.blobs)) for (const c of b.chunks) live.add(cidKey(c.cid))
    for (const reg of Object.values(m.regions)) {
      if (!reg.root) continue
      let level = new Geometry(reg.size, reg.chunkSize, reg.fanout).height
      let wave: CidBytes[] = live.has(cidKey(reg.root)) ? [] : [reg.root]
      for (const c of wave) live.add(cidKey(c))
      while (wave.length) {
        // the level's nodes in one go: their remote ranges are fetched together
        await blocks.locateMany(wave)
        const next: CidBytes[] = []
        for (const cid of wave) {
          const e = blocks.getNode(cid)
          for (let s = 0; s < e.count; s++) {
            if (!e.codecs[s]) continue
            const c = childCid(e, s)
            const key = cidKey(c)
            if (live.has(key)) continue
            live.add(key)
            if (level > 1) next.push(c)
          }
        }
        wave = next
        level--
      }
    }
  }
  return live
}

