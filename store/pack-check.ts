/**
 * The packs against the index (verify's phase 1, SPEC.md §16.1): every pack is scanned front to back
 * (headers, entries with their checksums, footers); every index entry must point at an intact entry
 * of its CID, and every intact entry should be indexed. What the later phases need is left in the
 * state: the index as a table with each entry's state, the unindexed entries, the catalog records
 * found, and the tree nodes' payloads read on the way (kept for the walk).
 */
import { copyOf } from '../codecs/bytes.js'
import type { CatalogRecord } from '../codecs/catalog-record.js'
import { cidKey, cidToString, DAG_CBOR, RAW, type CidBytes } from '../codecs/cid.js'
import { ENTRY_KIND } from '../codecs/pack-format.js'
import { decodeLocation, type PackRecord } from './block-store.js'
import type { Finding, FindingKind } from './findings.js'
import { ENTRY_BAD, ENTRY_OK, type IndexTable } from './index-table.js'
import { blockKeyCid, blockRange } from './keys.js'
import { scanPack, type ScanEvent } from './pack-scan.js'
import { recordOf } from './rebuild.js'
import type { Repository } from './repository.js'
import { Slices } from './slices.js'

/** unindexed pack entries remembered for the judgement after the walk (36 bytes and a map slot each) */
export const MAX_UNINDEXED = 1 << 20
/** dag-cbor payloads kept from the scan for the walk (beyond: read again) */
export const KEEP_NODE_BYTES = 64 << 20

/** What the pack check reads and leaves for the later phases (verify's state satisfies it). */
export interface PackCheckState {
  readonly repo: Repository
  readonly table: IndexTable
  /** pack entries the index does not list (at most MAX_UNINDEXED remembered), by cidKey */
  readonly unindexed: Map<string, { cid: CidBytes; pack: number; offset: number }>
  unindexedCount: number
  /** catalog records found in the packs */
  readonly records: CatalogRecord[]
  /** at-rest payloads of dag-cbor entries by table index (at most KEEP_NODE_BYTES) */
  readonly kept: Map<number, Uint8Array>
  keptBytes: number
  /** blocks whose entry fails its checksum while their content is intact */
  readonly badChecksums: string[]
  /** set when rebuilding the index would fix what was found */
  indexFixable: boolean
  readonly onProgress?: (p: { phase: 'structure'; done: number; total: number; unit: 'bytes' }) => void
  emit(f: Finding): Finding
  markDamaged(cid: CidBytes, kind: FindingKind, message: string, where?: { pack?: number; offset?: number }): void
  /** whether a block reads back right through the store's read path (which re-hashes) */
  contentIntact(cid: CidBytes): boolean
  /**
   * Optional: scans pack `n` elsewhere (verify: on a worker thread, while this one reads the index);
   * undefined when it cannot (no worker, not a local file), and the scan runs here.
   */
  scanElsewhere?(n: number, opts: PackScanOptions): Promise<Iterable<ScanEvent>> | undefined
  /** Optional: the block at table index i was proven (read and re-hashed) by the scan elsewhere */
  markProven?(i: number): void
}

export interface PackScanOptions {
  end?: number
  sealed: boolean
  footerOptional: boolean
}

/** packs scanned ahead of the one checked (each in flight holds one pack's columns and node payloads) */
const SCAN_AHEAD = 3

/** damaged byte ranges of one pack: an index entry in one is damage, otherwise they are garbage */
type DamageRanges = { offset: number; length: number; truncated: boolean; cids: string[] }[]

/** Phase 1: the findings of the packs against the index, in order. */
export async function* checkPacks(s: PackCheckState): AsyncGenerator<Finding> {
  const blocks = s.repo.blocks
  const records = [...blocks.packRecords()].sort((a, b) => a[0] - b[0])
  // the first packs are scanned elsewhere while this thread reads the index
  const ahead = new Map<number, Promise<Iterable<ScanEvent>> | undefined>()
  const launch = (k: number) => {
    const r = records[k]
    if (!r || !s.scanElsewhere || !blocks.io.exists(r[0])) return
    const p = s.scanElsewhere(r[0], scanOptions(r[1]))
    p?.catch(() => {})
    ahead.set(r[0], p)
  }
  for (let k = 0; k < SCAN_AHEAD; k++) launch(k)
  yield* readIndex(s)
  const progress = { done: 0, total: records.reduce((n, [, r]) => n + r.committedLength, 0) }
  const damage = new Map<number, DamageRanges>()
  for (let k = 0; k < records.length; k++) {
    const [n, rec] = records[k]!
    launch(k + SCAN_AHEAD)
    let events: Iterable<ScanEvent> | undefined
    try {
      events = await ahead.get(n)
    } catch {
      // the scan elsewhere failed (a worker lost, a file that went away): here, saying why
    }
    ahead.delete(n)
    yield* checkPack(s, n, rec, damage, progress, events)
  }
  yield* strayPacks(s)
  yield* unmatchedEntries(s, damage)
  yield* damagedRanges(s, damage)
}

/** Every index entry into the table; one that is not a block location is a finding. */
async function* readIndex(s: PackCheckState): AsyncGenerator<Finding> {
for await (const [k, v] of s.repo.rawRange(blockRange)) {
  const cid = blockKeyCid(k)
  try {
    if (k.length !== 37 || cid[0] !== 0x01 || (cid[1] !== RAW && cid[1] !== DAG_CBOR) || cid[2] !== 0x1e || cid[3] !== 0x20) throw new Error('not a block key')
    s.table.add(cid, decodeLocation(v))
  } catch {
    let name: string | undefined
    try {
      name = k.length === 37 ? cidToString(copyOf(cid)) : undefined
    } catch {}
    yield s.emit({ phase: 'structure', kind: 'bad-index-value', severity: 'error', message: `index entry ${name ?? Buffer.from(k).toString('hex').slice(0, 80)} holds no valid block location`, cid: name })
  }
}
// the other key families (catalog, refs, records, metadata) read once end to end: LevelDB damage
// anywhere in the index is found (corrupt-index), not only where the later checks happen to read
for (const range of [{ gte: new Uint8Array(0), lt: blockRange.gte }, { gte: blockRange.lt, lt: Uint8Array.of(0xff, 0xff, 0xff, 0xff) }]) {
  for await (const _ of s.repo.rawRange(range)) void _
}
}

function scanOptions(rec: PackRecord): PackScanOptions {
  const sealed = rec.sealed && !rec.retired
  return { end: sealed || rec.retired ? undefined : rec.committedLength, sealed, footerOptional: rec.retired === true }
}

/** One pack scanned front to back against the table (`scanned`: its events from a scan elsewhere). */
async function* checkPack(
  s: PackCheckState,
  n: number,
  rec: PackRecord,
  damage: Map<number, DamageRanges>,
  progress: { done: number; total: number },
  scanned?: Iterable<ScanEvent>,
): AsyncGenerator<Finding> {
  const blocks = s.repo.blocks
  if (!blocks.io.exists(n)) {
    yield s.emit({ phase: 'structure', kind: 'missing-pack', severity: 'error', message: `pack ${n} (${blocks.io.describe(n)}) is missing; its blocks are lost`, pack: n, path: blocks.io.describe(n) })
    progress.done += rec.committedLength
    return
  }
  const sealed = rec.sealed && !rec.retired
  const ranges: DamageRanges = []
  damage.set(n, ranges)
  let intact = 0
  let footerCount: number | undefined
  // a pack's entries are checked synchronously: the event loop has a turn every slice
  const slices = new Slices()
  for (const ev of scanned ?? scanPack(blocks.io.reader(n), n, scanOptions(rec))) {
    if (slices.due()) await slices.next()
    if (ev.kind === 'entry') {
      const e = ev.entry
      intact++
      if (e.kind === ENTRY_KIND.record) {
        // a catalog record: not a block; kept for the comparison with the catalog (phase 2)
        const r = recordOf(e)
        if (r) s.records.push(r)
        else yield s.emit({ phase: 'structure', kind: 'bad-record', severity: 'warning', message: `the catalog record in pack ${n} at offset ${e.offset} does not decode or does not match its hash: the packs alone can no longer rebuild that commit's catalog change`, pack: n, offset: e.offset })
        continue
      }
      const i = s.table.find(e.cid)
      if (i < 0) {
        // garbage (gc took it out of the index) unless a checkpoint needs it: judged after the walk
        s.unindexedCount++
        if (s.unindexed.size < MAX_UNINDEXED) s.unindexed.set(cidKey(e.cid), { cid: copyOf(e.cid), pack: n, offset: e.offset })
      } else if (s.table.pack[i] === n && s.table.offset[i] === e.offset) {
        if (s.table.depth[i] !== e.depth && s.table.stored[i] === e.storedLength && s.table.raw[i] === e.rawLength && s.table.codec[i] === e.codec) {
          // only the delta depth is off: reads do not use it (writers bound chains by it)
          s.table.state[i] = ENTRY_OK
          s.indexFixable = true
          yield s.emit({ phase: 'structure', kind: 'bad-index-value', severity: 'warning', message: `the index entry of ${cidToString(e.cid)} records delta depth ${s.table.depth[i]}, its pack entry ${e.depth}`, cid: cidToString(e.cid), pack: n, offset: e.offset })
        } else if (s.table.stored[i] !== e.storedLength || s.table.raw[i] !== e.rawLength || s.table.codec[i] !== e.codec) {
          s.table.state[i] = ENTRY_BAD
          yield s.emit({ phase: 'structure', kind: 'dangling-index-entry', severity: 'error', message: `the index entry of ${cidToString(e.cid)} disagrees with its pack entry (lengths or codec)`, cid: cidToString(e.cid), pack: n, offset: e.offset })
        } else {
          s.table.state[i] = ENTRY_OK
          if (e.proven) s.markProven?.(i)
          // tree nodes and manifests are kept as read (small: mostly deltas), for the walk
          if (e.cid[1] === DAG_CBOR && s.keptBytes + e.storedLength <= KEEP_NODE_BYTES) {
            s.kept.set(i, copyOf(e.payload))
            s.keptBytes += e.storedLength
          }
        }
      }
      // an intact copy elsewhere than the index says is a duplicate: harmless garbage
    } else if (ev.kind === 'damage') {
      ranges.push({ offset: ev.offset, length: ev.length, truncated: ev.reason.startsWith('the file ends'), cids: [] })
    } else if (ev.kind === 'bad-header') {
      yield s.emit({
        phase: 'structure',
        kind: 'bad-pack-header',
        severity: rec.retired ? 'info' : 'error',
        message: `pack ${n} has a bad header: ${ev.reason}${rec.retired ? ' (a retired pack: gc rewrites it)' : ''}`,
        pack: n,
      })
    } else if (ev.kind === 'bad-footer') {
      yield s.emit({ phase: 'structure', kind: 'bad-pack-footer', severity: 'error', message: `sealed pack ${n} has a bad footer: ${ev.reason}`, pack: n })
    } else if (ev.kind === 'footer') {
      footerCount = ev.entryCount
    } else if (ev.kind === 'end') {
      progress.done += rec.committedLength
      const bad: string[] = []
      if (sealed && rec.committedLength !== ev.fileSize) bad.push(`says ${rec.committedLength} bytes, the sealed file has ${ev.fileSize}`)
      if (!rec.retired && ranges.length === 0 && rec.entries !== intact) bad.push(`counts ${rec.entries} entries, the pack holds ${intact}`)
      if (footerCount !== undefined && ranges.length === 0 && footerCount !== intact) bad.push(`the footer counts ${footerCount} entries, the pack holds ${intact}`)
      if (bad.length) {
        s.indexFixable = true
        yield s.emit({ phase: 'structure', kind: 'bad-pack-record', severity: 'warning', message: `the index record of pack ${n} ${bad.join('; ')}`, pack: n })
      }
    }
    s.onProgress?.({ phase: 'structure', done: progress.done, total: progress.total, unit: 'bytes' })
  }
}

/** Pack files set aside by an older version, and pack files no index record names. */
function* strayPacks(s: PackCheckState): Generator<Finding> {
  const blocks = s.repo.blocks
for (const q of blocks.io.quarantined()) {
  s.indexFixable = true
  yield s.emit({ phase: 'structure', kind: 'orphan-pack', severity: 'warning', message: `${q} was set aside by an older version of ckpt: it may hold checkpoints the index lost (ckpt repair --rebuild-index takes it back)`, path: q })
}
// pack files no index record names: a crash's leftover (nothing acknowledged in it), or what a
// lost or stale index no longer lists
for (const n of blocks.io.list()) {
  if (blocks.packRecords().has(n)) continue
  if (s.repo.leftovers.includes(n)) {
    yield s.emit({ phase: 'structure', kind: 'leftover-pack', severity: 'info', message: `pack file ${blocks.io.describe(n)} is not in the index: a crash's leftover holding nothing that was acknowledged (the next writer deletes it)`, pack: n, path: blocks.io.describe(n) })
  } else {
    s.indexFixable = true
    yield s.emit({ phase: 'structure', kind: 'unlisted-pack', severity: 'warning', message: `pack file ${blocks.io.describe(n)} is not in the index and may hold checkpoints the index lost`, pack: n, path: blocks.io.describe(n) })
  }
}
}

/** Index entries no intact pack entry matched: damage (or only a damaged checksum). */
function* unmatchedEntries(s: PackCheckState, damage: Map<number, DamageRanges>): Generator<Finding> {
for (let i = 0; i < s.table.n; i++) {
  if (s.table.state[i] === ENTRY_OK) continue
  const cid = s.table.cid(i)
  const pack = s.table.pack[i]!
  const offset = s.table.offset[i]!
  const range = damage.get(pack)?.find((r) => offset >= r.offset && offset < r.offset + r.length)
  // damaged bytes where the entry starts: when what they hold still reads back as the block (the
  // hash checked, as every read does), only its checksum is damaged — no read fails
  if (range && s.table.state[i] === 0 && offset === range.offset && s.contentIntact(cid)) {
    s.table.state[i] = ENTRY_OK
    s.badChecksums.push(cidToString(cid))
    yield s.emit({
      phase: 'structure',
      kind: 'bad-checksum',
      severity: 'warning',
      message: `the entry of ${cidToString(cid)} in pack ${pack} at offset ${offset} fails its checksum, but its content still hashes to its CID (reads are fine; ckpt repair stores it anew)`,
      cid: cidToString(cid),
      pack,
      offset,
    })
    continue
  }
  if (range) range.cids.push(cidToString(cid))
  // an index entry off the mark where the bytes are fine: rebuilding the index may find the block
  else s.indexFixable = true
  if (s.table.state[i] === 0) {
    s.table.state[i] = ENTRY_BAD
    yield s.emit({
      phase: 'structure',
      kind: 'dangling-index-entry',
      severity: 'error',
      message: `the index places ${cidToString(cid)} in pack ${pack} at offset ${offset}, where ${range ? 'the bytes are damaged' : 'no intact entry of it is'}`,
      cid: cidToString(cid),
      pack,
      offset,
    })
  }
  s.markDamaged(cid, 'missing-block', `block ${cidToString(cid)} has no intact copy where the index points (pack ${pack}, offset ${offset})`, { pack, offset })
}
}

/** Damaged byte ranges: an error where the index places blocks, garbage elsewhere. */
function* damagedRanges(s: PackCheckState, damage: Map<number, DamageRanges>): Generator<Finding> {
for (const [n, ranges] of damage) {
  for (const r of ranges) {
    const used = r.cids.length > 0
    yield s.emit({
      phase: 'structure',
      kind: r.truncated ? 'truncated-pack' : 'damaged-entry',
      severity: used ? 'error' : 'info',
      message: r.truncated
        ? `pack ${n} is truncated: it ends ${r.length} bytes before its committed length${used ? `, losing ${r.cids.length} indexed block${r.cids.length === 1 ? '' : 's'}` : ''}`
        : `pack ${n} has ${r.length} damaged bytes at offset ${r.offset}${used ? `, where the index places ${r.cids.length} block${r.cids.length === 1 ? '' : 's'}` : ' that no index entry uses (garbage: gc reclaims it)'}`,
      pack: n,
      offset: r.offset,
      length: r.length,
    })
  }
}
}
