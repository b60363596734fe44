/**
 * Differences between two checkpoints, in O(changed subtrees): equal CIDs end the descent.
 */
import { cidEquals, type CidBytes } from '../codecs/cid.js'
import type { Manifest } from '../codecs/manifest.js'
import type { BlockStore } from '../store/index.js'
import { Geometry } from './region-tree.js'
import { sameCid as same, slotCid as slot } from './node-compare.js'
import { nodeEntries } from './restore.js'

export type DiffEntry =
  | { kind: 'chunks'; region: string; start: number; end: number; chunkSize: number }
  | { kind: 'region-added' | 'region-removed' | 'region-resized'; region: string }
  | { kind: 'blob-added' | 'blob-removed' | 'blob-changed'; blob: string }

export function* diffManifests(blocks: BlockStore, a: Manifest, b: Manifest): Generator<DiffEntry> {
  const names = [...new Set([...Object.keys(a.regions), ...Object.keys(b.regions)])].sort()
  for (const name of names) {
    const ra = a.regions[name]
    const rb = b.regions[name]
    if (!ra) {
      yield { kind: 'region-added', region: name }
      continue
    }
    if (!rb) {
      yield { kind: 'region-removed', region: name }
      continue
    }
    if (ra.size !== rb.size || ra.chunkSize !== rb.chunkSize || ra.fanout !== rb.fanout) {
      yield { kind: 'region-resized', region: name }
      continue
    }
    const geo = new Geometry(ra.size, ra.chunkSize, ra.fanout)
    let run: { start: number; end: number } | undefined
    const changed: DiffEntry[] = []
    const mark = (i: number) => {
      if (run && run.end === i) run.end++
      else {
        if (run) changed.push({ kind: 'chunks', region: name, start: run.start, end: run.end, chunkSize: geo.chunkSize })
        run = { start: i, end: i + 1 }
      }
    }
    const walk = (level: number, index: number, ca: CidBytes | null, cb: CidBytes | null) => {
      if (same(ca, cb)) return
      if (level === 0) return mark(index)
      const ea = ca ? nodeEntries(blocks, ca) : null
      const eb = cb ? nodeEntries(blocks, cb) : null
      const n = geo.nodeCount(level, index)
      for (let s = 0; s < n; s++) walk(level - 1, index * geo.fanout + s, slot(ea, s), slot(eb, s))
    }
    walk(geo.height, 0, ra.root, rb.root)
    if (run) changed.push({ kind: 'chunks', region: name, start: run.start, end: run.end, chunkSize: geo.chunkSize })
    yield* changed
  }
  const blobs = [...new Set([...Object.keys(a.blobs), ...Object.keys(b.blobs)])].sort()
  for (const name of blobs) {
    const ba = a.blobs[name]
    const bb = b.blobs[name]
    if (!ba) yield { kind: 'blob-added', blob: name }
    else if (!bb) yield { kind: 'blob-removed', blob: name }
    else if (ba.size !== bb.size || ba.chunks.length !== bb.chunks.length || ba.chunks.some((c, i) => !cidEquals(c.cid, bb.chunks[i]!.cid))) {
      yield { kind: 'blob-changed', blob: name }
    }
  }
}
