/**
 * Where a store's bytes go, beside the ideal (bench/ideal.ts): the chunks' payloads, the tree (nodes,
 * node deltas, manifests), the catalog records, the 52-byte entry headers and the packs' own headers
 * and footers (all read from the pack files, SPEC.md §5), the index (LevelDB) and the scan cache
 * files. What is over the ideal is told part by part, so a figure over 1.05 × says what it is made of.
 */
import fs from 'node:fs'
import path from 'node:path'
import { RAW } from '../codecs/cid.js'
import { ENTRY_KIND, scanPackFile } from '../store/index.js'
import { dirBytes } from './stats.js'

export interface StoreBytes {
  total: number
  /** payloads of chunk (raw) blocks */
  chunks: number
  /** payloads of tree nodes, node deltas and manifests (dag-cbor blocks) */
  tree: number
  /** payloads of catalog records */
  records: number
  /** one 52-byte header per pack entry */
  entryHeaders: number
  entries: number
  /** pack headers, footers and bytes no entry holds (a torn tail) */
  packOther: number
  index: number
  scan: number
  /** the rest of the store directory (lock, marker files) */
  other: number
}

export function measureStoreBytes(dir: string): StoreBytes {
  const b: StoreBytes = { total: dirBytes(dir), chunks: 0, tree: 0, records: 0, entryHeaders: 0, entries: 0, packOther: 0, index: 0, scan: 0, other: 0 }
  const packs = path.join(dir, 'packs')
  let packFiles = 0
  for (const f of fs.readdirSync(packs)) {
    if (!f.endsWith('.pack')) continue
    packFiles += fs.statSync(path.join(packs, f)).size
    for (const ev of scanPackFile(path.join(packs, f), Number.parseInt(f, 10))) {
      if (ev.kind !== 'entry') continue
      const e = ev.entry
      b.entries++
      b.entryHeaders += e.bytes.length - e.payload.length
      if (e.kind === ENTRY_KIND.record) b.records += e.payload.length
      else if (e.cid[1] === RAW) b.chunks += e.payload.length
      else b.tree += e.payload.length
    }
  }
  b.packOther = packFiles - b.chunks - b.tree - b.records - b.entryHeaders
  const sub = (name: string) => (fs.existsSync(path.join(dir, name)) ? dirBytes(path.join(dir, name)) : 0)
  b.index = sub('index')
  b.scan = sub('scan')
  b.other = b.total - packFiles - b.index - b.scan
  return b
}

/** The parts as percentages of the ideal, one line: "chunks 99.1%, tree 1.6%, ...". */
export function describeStoreBytes(b: StoreBytes, ideal: number): string {
  const pct = (n: number) => `${((n / ideal) * 100).toFixed(2)}%`
  return [
    `chunks ${pct(b.chunks)}`,
    `tree ${pct(b.tree)}`,
    `entry headers ${pct(b.entryHeaders)} (${b.entries} × 52 B)`,
    `index ${pct(b.index)}`,
    `scan files ${pct(b.scan)}`,
    `catalog records ${pct(b.records)}`,
    `other ${pct(b.packOther + b.other)}`,
  ].join(', ')
}
