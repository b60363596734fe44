/**
 * The scan cache (DESIGN.md "Full scans", file format in §4): per timeline and region, the 64 KiB
 * span digests of the region as of its last full scan, keyed by the region tree's root CID. Equal
 * roots mean equal chunk digests, hence equal bytes, so a table is valid for any scan that diffs
 * against a tree with its root, whatever happened in between (crashes, rm, thin, gc, dirty-hint
 * checkpoints): a table whose root differs is simply not used. Files are written after the
 * checkpoint is durable, atomically (temp + rename), without fsync: a torn or lost file fails its
 * checksum or is missing, and the scan then hashes every chunk as without a cache. The checksum is
 * keyed with the store's scan key (kept in the index): a file written by anyone who could not read
 * the index is ignored like a damaged one.
 */
import fs from 'node:fs'
import path from 'node:path'
import { blake3 } from '../codecs/blake3.js'
import { cidEquals, type CidBytes } from '../codecs/cid.js'
import { decodeChunkTable, encodeChunkTable, LEAF_HEADER_SIZE, type ChunkTable } from '../codecs/leaf-table.js'
import { decodeSpanTable, encodeSpanTable, SPAN_SIZE, spanCount, type SpanTable } from '../codecs/scan-cache.js'
import { replaceFileSync } from '../store/index.js'
import type { Geometry } from './region-tree.js'

export const SCAN_DIR = 'scan'

/** The cache file of a timeline's region: its name is a hash, so any timeline name makes a file name. */
export function scanCachePath(storeDir: string, timeline: string, region: string): string {
  const key = blake3(Buffer.from(`${timeline}\0${region}`, 'utf8'))
  return path.join(storeDir, SCAN_DIR, `${Buffer.from(key.subarray(0, 16)).toString('hex')}.spans`)
}

/** The leaf file of a timeline's region (§18.1): the span file's name with `.leaves` for `.spans`. */
export function leafFilePath(storeDir: string, timeline: string, region: string): string {
  return scanCachePath(storeDir, timeline, region).replace(/\.spans$/, '.leaves')
}

/**
 * The leaf file, of any timeline, whose tree is `root` of this geometry (a restore knows the tree, not
 * the timeline): only the headers of the store's leaf files are read until one names `root`. Not trusted
 * (see offerLeaves); undefined when there is none or it is damaged.
 */
export function leafTableFor(storeDir: string, geo: Geometry, root: CidBytes | null): ChunkTable | undefined {
  if (!root) return undefined
  const dir = path.join(storeDir, SCAN_DIR)
  let names: string[]
  try {
    names = fs.readdirSync(dir).filter((n) => n.endsWith('.leaves'))
  } catch {
    return undefined
  }
  const head = Buffer.alloc(LEAF_HEADER_SIZE)
  for (const name of names) {
    const file = path.join(dir, name)
    try {
      const fd = fs.openSync(file, 'r')
      try {
        if (fs.readSync(fd, head, 0, LEAF_HEADER_SIZE, 0) !== LEAF_HEADER_SIZE || !cidEquals(head.subarray(32, 32 + root.length), root)) continue
      } finally {
        fs.closeSync(fd)
      }
      const t = decodeChunkTable(fs.readFileSync(file))
      if (t && t.size === geo.size && t.chunkSize === geo.chunkSize && t.fanout === geo.fanout && cidEquals(t.root, root)) return t
    } catch {
      // unreadable: as if absent
    }
  }
  return undefined
}

export class ScanCache {
  private readonly tables = new Map<string, SpanTable>()

  /** `dir` undefined: a memory store, tables live in this process only; `key`: the store's scan key (§18) */
  constructor(
    private readonly dir: string | undefined,
    private readonly timeline: string,
    private readonly key: Uint8Array,
  ) {}

  /** The table for `region` if it describes exactly the tree `root` of this geometry; else undefined. */
  lookup(region: string, geo: Geometry, root: CidBytes | null): SpanTable | undefined {
    if (!root) return undefined
    let t = this.tables.get(region)
    if (!t && this.dir) {
      try {
        t = decodeSpanTable(fs.readFileSync(scanCachePath(this.dir, this.timeline, region)), this.key)
      } catch {
        t = undefined
      }
      if (t) this.tables.set(region, t)
    }
    if (!t) return undefined
    if (t.size !== geo.size || t.chunkSize !== geo.chunkSize || t.spanSize !== SPAN_SIZE || t.zero.length !== spanCount(geo.size, SPAN_SIZE)) return undefined
    return cidEquals(t.root, root) ? t : undefined
  }

  /** Records a complete table (its root set to the committed tree's). Never fails: a cache is optional. */
  save(region: string, t: SpanTable): void {
    this.tables.set(region, t)
    if (!this.dir) return
    const file = scanCachePath(this.dir, this.timeline, region)
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true })
      replaceFileSync(file, (tmp) => fs.writeFileSync(tmp, encodeSpanTable(t, this.key)), `${file}.tmp`)
    } catch {}
  }

  /**
   * The chunk links of the tree `root` of this geometry from the region's leaf file, or undefined. Not
   * trusted: RegionTree.seedChunks checks each leaf it takes against its CID.
   */
  leaves(region: string, geo: Geometry, root: CidBytes | null): ChunkTable | undefined {
    if (!root || !this.dir) return undefined
    let t: ChunkTable | undefined
    try {
      t = decodeChunkTable(fs.readFileSync(leafFilePath(this.dir, this.timeline, region)))
    } catch {
      return undefined
    }
    if (!t || t.size !== geo.size || t.chunkSize !== geo.chunkSize || t.fanout !== geo.fanout) return undefined
    return cidEquals(t.root, root) ? t : undefined
  }

  /** Writes the region's leaf file (after the checkpoint is durable; no fsync). Never fails: the file is optional. */
  saveLeaves(region: string, t: ChunkTable): void {
    if (!this.dir) return
    const file = leafFilePath(this.dir, this.timeline, region)
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true })
      replaceFileSync(file, (tmp) => fs.writeFileSync(tmp, encodeChunkTable(t)), `${file}.tmp`)
    } catch {}
  }
}
