/**
 * verifyRemote: every problem of a remote (SPEC.md §22) as typed findings, cheap first. It only reads
 * (GET, LIST): it never writes, moves or deletes an object of the remote.
 *
 *   1. format   ckpt-remote.json decodes (missing: not a ckpt remote, CKPT_BAD_REMOTE)
 *   2. index    one LIST of packs/ (keys and sizes: never a HEAD per pack), one of index/; every index
 *               segment hashes to its name and decodes, its packs are there with the sizes it says,
 *               its entries lie inside them, its deps are there
 *   3. catalog  tl/ records and catalog segments decode; a catalog segment's index segments are there
 *               and reach its checkpoints' manifests; claims no catalog segment lists (a push that
 *               stopped), packs no segment lists, segments nothing reaches: warnings
 *   4. data     (deep: every listed pack; sample: a random share, at least one) each pack whole, at
 *               most 3 in memory: its hash, header, footer, and every entry a segment lists there
 *               (header, CRC, block decompressed and re-hashed); every link of a tree node or
 *               manifest is listed in its segment or that segment's deps
 *
 * Memory: the index segments (60 B per block) and a CID table over them (12 B per block).
 */
import fs from 'node:fs'
import { blake3 } from '../codecs/blake3.js'
import { cidBytes, cidCodec, cidToString, DAG_CBOR, parseCid, type CidBytes } from '../codecs/cid.js'
import { CkptError, isCkptError } from '../codecs/errors.js'
import { decodeManifest } from '../codecs/manifest.js'
import { decodeFooter, decodePackHeader, entryCrcOk, entryPayload, ENTRY_HEADER_SIZE, ENTRY_KIND, FOOTER_SIZE, isFault, openPayload, PACK_HEADER_SIZE } from '../codecs/pack-format.js'
import { CONFIG_KEY, decodeCatalogSegment, decodeConfig, decodeJson, decodeSegment, HASH_HEX, packKey, segmentEntry, segmentKey, SEGMENT_ENTRY_SIZE, toHex, type Segment } from '../codecs/remote-format.js'
import { decodeNode } from '../codecs/tree-node.js'
import { AT_REST } from '../codecs/compress.js'
import { deltaBaseCid } from '../codecs/node-delta.js'
import { openObjectStore, parseRemoteUrl, type ObjectStore, type Severity } from '../store/index.js'

/**
 * format/index: bad-format-object (ckpt-remote.json does not decode), stray-object (a key that is no
 * name of the layout: readers ignore it), bad-segment (does not hash to its name or decode),
 * missing-segment (named by a catalog segment or as a dep, not there), bad-index-entry (outside its
 * pack), missing-pack, truncated-pack / pack-size-mismatch (not the size a segment says).
 * catalog: bad-timeline-record, missing-timeline-record, bad-catalog-segment, missing-checkpoint (its
 * manifest is not in the segments its catalog segment reaches), catalog-conflict (two checkpoints at
 * one vtime), pending-claim (a claim no catalog segment lists: a push that stopped), bad-claim,
 * unclaimed-checkpoint, unreferenced-segment / unreferenced-pack (garbage: gc removes it).
 * data: pack-hash-mismatch, bad-pack-header, bad-pack-footer, damaged-entry (header, CRC or length),
 * hash-mismatch (does not decompress or re-hash to its CID), bad-node, bad-manifest, missing-link (a
 * node links a block no segment lists), incomplete-deps (listed only outside its segment's deps).
 */
export type RemoteFindingKind =
  | 'bad-format-object' | 'stray-object' | 'bad-segment' | 'missing-segment' | 'bad-index-entry' | 'missing-pack' | 'truncated-pack' | 'pack-size-mismatch'
  | 'bad-timeline-record' | 'missing-timeline-record' | 'bad-catalog-segment' | 'missing-checkpoint' | 'catalog-conflict'
  | 'pending-claim' | 'bad-claim' | 'unclaimed-checkpoint' | 'unreferenced-segment' | 'unreferenced-pack'
  | 'pack-hash-mismatch' | 'bad-pack-header' | 'bad-pack-footer' | 'damaged-entry' | 'hash-mismatch' | 'bad-node' | 'bad-manifest' | 'missing-link' | 'incomplete-deps'

export interface RemoteFinding {
  phase: 'format' | 'index' | 'catalog' | 'data'
  kind: RemoteFindingKind
  severity: Severity
  /** the object the finding is about, and a byte offset in it */
  key: string
  message: string
  offset?: number
  cid?: string
  timeline?: string
  vtime?: string
}

export interface RemoteVerifyProgress {
  phase: 'index' | 'catalog' | 'data'
  done: number
  total: number
  unit: 'objects' | 'bytes'
}

export interface RemoteVerifyOptions {
  /** phase 4 on every pack */
  deep?: boolean
  /** phase 4 on a random PCT% of the packs (0 < PCT <= 100), at least one */
  sample?: number
  /** where AWS_* come from (default process.env) */
  env?: Record<string, string | undefined>
  signal?: AbortSignal
  onProgress?: (p: RemoteVerifyProgress) => void
}

/** clean: no error and no warning; ok: no error (warnings are garbage or unfinished pushes, which no reader sees). */
export interface RemoteVerifySummary {
  /** the remote's URL (never a credential) */
  remote: string
  clean: boolean
  ok: boolean
  errors: number
  warnings: number
  infos: number
  /** on the remote: index segments, packs and their bytes, entries in the segments, timelines, catalogued checkpoints, claims */
  segments: number
  packs: number
  packBytes: number
  blocks: number
  timelines: number
  checkpoints: number
  claims: number
  pendingClaims: number
  unreferencedSegments: number
  unreferencedPacks: number
  unreferencedBytes: number
  /** phase 4: packs fetched, entries checked, bytes read */
  dataPacks: number
  dataBlocks: number
  dataBytes: number
  ms: { index: number; catalog: number; data: number }
  requests: { gets: number; lists: number }
  bytesIn: number
  /** what to do next */
  advice: string[]
  /** keys of the objects of error findings (missing or damaged) */
  damagedKeys: string[]
}

/** fetched at once: index segments, small JSON objects, whole packs (a pack is ~32 MiB) */
const SEGMENTS_IN_FLIGHT = 8
const OBJECTS_IN_FLIGHT = 16
const PACKS_IN_FLIGHT = 3

/**
 * Checks the remote at `url` (a URL: the store's named remotes resolve through CkptStore.verifyRemote).
 * Yields every finding, then returns the summary. Throws only when the remote cannot be read at all
 * (CKPT_REMOTE_UNAVAILABLE, CKPT_REMOTE_AUTH, CKPT_BAD_REMOTE: no such bucket or no ckpt remote there,
 * CKPT_VERSION: a format this build does not read).
 */
export async function* verifyRemote(url: string, opts: RemoteVerifyOptions = {}): AsyncGenerator<RemoteFinding, RemoteVerifySummary> {
  const { sample } = opts
  if (sample !== undefined && !(typeof sample === 'number' && sample > 0 && sample <= 100)) throw new CkptError('CKPT_BAD_ARGUMENT', 'sample must be a percentage above 0 and at most 100', { sample })
  if (opts.deep && opts.sample !== undefined) throw new CkptError('CKPT_BAD_ARGUMENT', 'give deep or sample, not both')
  const u = parseRemoteUrl(url) // a directory that is not there is no remote: opening one would make it
  if (u.scheme === 'file' && !fs.existsSync(u.path!)) throw new CkptError('CKPT_BAD_REMOTE', `${url} is not a ckpt remote (no such directory)`, { remote: url })
  const objects = await openObjectStore(url, { env: opts.env })
  try {
    const v = new RemoteVerifier(objects, opts)
    return yield* v.run()
  } finally {
    await objects.close()
  }
}

/** Fetches items a few at once and hands them on in order (at most `width` fetched and not yet taken). */
async function* inOrder<T, R>(items: readonly T[], width: number, fetch: (t: T) => Promise<R>): AsyncGenerator<[T, R]> {
  const pending: Promise<R>[] = []
  const start = (k: number) => {
    const p = fetch(items[k]!)
    p.catch(() => {}) // awaited below, in order
    pending[k] = p
  }
  for (let k = 0; k < Math.min(width, items.length); k++) start(k)
  for (let k = 0; k < items.length; k++) {
    const r = await pending[k]!
    delete pending[k]
    if (k + width < items.length) start(k + width)
    yield [items[k]!, r]
  }
}

/**
 * Every entry of the index segments by CID: a 64-bit key per entry (the digest's first bits above,
 * the entry's number below), sorted; a lookup compares whole CIDs among the keys that share the bits.
 */
class CidTable {
  private readonly keys: BigUint64Array
  private readonly segOf: Uint32Array
  private readonly starts: number[] = []
  private readonly shift: bigint
  private readonly mask: bigint

  constructor(readonly segs: readonly { name: string; seg: Segment }[]) {
    let n = 0
    for (const s of segs) {
      this.starts.push(n)
      n += s.seg.count
    }
    const bits = Math.max(1, Math.ceil(Math.log2(n + 1)))
    this.shift = BigInt(bits)
    this.mask = (1n << this.shift) - 1n
    this.keys = new BigUint64Array(n)
    this.segOf = new Uint32Array(n)
    let i = 0
    for (let si = 0; si < segs.length; si++) {
      const e = segs[si]!.seg.entries
      const b = Buffer.from(e.buffer, e.byteOffset, e.byteLength)
      for (let k = 0; k < segs[si]!.seg.count; k++, i++) {
        this.keys[i] = ((b.readBigUInt64BE(k * SEGMENT_ENTRY_SIZE + 4) >> this.shift) << this.shift) | BigInt(i)
        this.segOf[i] = si
      }
    }
    this.keys.sort()
  }

  /** Indexes (in segs) of the segments that list `cid`. */
  find(cid: CidBytes): number[] {
    const high = (Buffer.from(cid.buffer, cid.byteOffset, cid.byteLength).readBigUInt64BE(4) >> this.shift) << this.shift
    let lo = 0
    let hi = this.keys.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.keys[mid]! < high) lo = mid + 1
      else hi = mid
    }
    const out: number[] = []
    for (let j = lo; j < this.keys.length && (this.keys[j]! & ~this.mask) === high; j++) {
      const i = Number(this.keys[j]! & this.mask)
      const si = this.segOf[i]!
      const at = (i - this.starts[si]!) * SEGMENT_ENTRY_SIZE
      const e = this.segs[si]!.seg.entries
      let same = true
      for (let q = 0; same && q < cid.length; q++) same = e[at + q] === cid[q]
      if (same) out.push(si)
    }
    return out
  }
}

type Emit = Omit<RemoteFinding, 'phase'> & { phase?: RemoteFinding['phase'] }

class RemoteVerifier {
  private readonly counts = { errors: 0, warnings: 0, infos: 0 }
  private readonly damagedKeys = new Set<string>()
  private phase: RemoteFinding['phase'] = 'format'
  /** pack hash -> size, from the LIST of packs/ */
  private readonly packs = new Map<string, number>()
  /** index segments on the remote (LIST of index/), and those that hash and decode */
  private readonly listedSegments = new Set<string>()
  private readonly segments: { name: string; seg: Segment }[] = []
  private readonly segIndex = new Map<string, number>()
  private table!: CidTable
  private readonly closures = new Map<string, Set<string>>()
  private readonly reportedLinks = new Set<string>()
  /** packs some segment lists, and segments some catalog segment reaches */
  private readonly listedPacks = new Set<string>()
  private readonly reachedSegments = new Set<string>()
  private readonly timelines = new Set<string>()
  /** timeline -> vtime (decimal text) -> CID text, from the catalog segments */
  private readonly catalog = new Map<string, Map<string, string>>()
  /** NAME@VTIME of the checkpoints catalog segments drop (thinning), and catalogued ones that cannot be read */
  private readonly dropped = new Set<string>()
  private readonly unreadable: Emit[] = []
  private readonly n = { checkpoints: 0, claims: 0, pendingClaims: 0, unreferencedSegments: 0, unreferencedPacks: 0, unreferencedBytes: 0, dataPacks: 0, dataBlocks: 0, dataBytes: 0 }

  constructor(
    private readonly objects: ObjectStore,
    private readonly opts: RemoteVerifyOptions,
  ) {}

  private emit(f: Emit): RemoteFinding {
    const out: RemoteFinding = { ...f, phase: f.phase ?? this.phase }
    this.counts[out.severity === 'error' ? 'errors' : out.severity === 'warning' ? 'warnings' : 'infos']++
    if (out.severity === 'error') this.damagedKeys.add(out.key)
    return out
  }

  private stray(key: string, form: string): RemoteFinding {
    return this.emit({ kind: 'stray-object', severity: 'info', key, message: `${key} is not ${form}: readers ignore it` })
  }

  private get(key: string): Promise<Uint8Array | undefined> {
    return this.objects.get(key, { signal: this.opts.signal })
  }

  private async keys(prefix: string): Promise<{ key: string; size: number }[]> {
    const out: { key: string; size: number }[] = []
    for await (const o of this.objects.list(prefix, { signal: this.opts.signal })) out.push({ key: o.key, size: o.size })
    return out
  }

  async *run(): AsyncGenerator<RemoteFinding, RemoteVerifySummary> {
    const ms = { index: 0, catalog: 0, data: 0 }
    let t = performance.now()
    yield* this.formatObject()
    this.phase = 'index'
    yield* this.indexPhase()
    ms.index = performance.now() - t
    t = performance.now()
    this.phase = 'catalog'
    yield* this.timelineRecords()
    yield* this.catalogSegments()
    yield* this.claimObjects()
    yield* this.garbage()
    ms.catalog = performance.now() - t
    if (this.opts.deep || this.opts.sample !== undefined) {
      t = performance.now()
      this.phase = 'data'
      yield* this.dataPhase()
      ms.data = performance.now() - t
    }
    return this.summary(ms)
  }

  private async *formatObject(): AsyncGenerator<RemoteFinding> {
    const bytes = await this.get(CONFIG_KEY)
    if (!bytes) throw new CkptError('CKPT_BAD_REMOTE', `${this.objects.url} is not a ckpt remote (it has no ${CONFIG_KEY})`, { remote: this.objects.url })
    try {
      decodeConfig(bytes)
    } catch (err) {
      if (!isCkptError(err, 'CKPT_BAD_REMOTE')) throw err
      yield this.emit({ kind: 'bad-format-object', severity: 'error', key: CONFIG_KEY, message: (err as Error).message })
    }
  }

  private async *indexPhase(): AsyncGenerator<RemoteFinding> {
    for (const o of await this.keys('packs/')) {
      const m = /^packs\/([0-9a-f]{2})\/([0-9a-f]{64})$/.exec(o.key)
      if (m && m[2]!.startsWith(m[1]!)) this.packs.set(m[2]!, o.size)
      else yield this.stray(o.key, "a pack's name (packs/HH/HASH)")
    }
    const names: string[] = []
    for (const o of await this.keys('index/')) {
      const name = o.key.slice('index/'.length)
      if (HASH_HEX.test(name)) names.push(name)
      else yield this.stray(o.key, "an index segment's name (index/HASH)")
    }
    for (const n of names) this.listedSegments.add(n)
    let done = 0
    for await (const [name, bytes] of inOrder(names, SEGMENTS_IN_FLIGHT, (n) => this.get(segmentKey(n)))) {
      this.opts.onProgress?.({ phase: 'index', done: done++, total: names.length, unit: 'objects' })
      yield* this.segment(name, bytes)
    }
    this.table = new CidTable(this.segments)
    // deps: every segment a segment's blocks reach must be there
    const missing = new Map<string, string[]>()
    for (const { name, seg } of this.segments) {
      for (const d of seg.deps) if (!this.listedSegments.has(d)) missing.set(d, [...(missing.get(d) ?? []), name])
    }
    for (const [d, by] of missing) {
      yield this.emit({ kind: 'missing-segment', severity: 'error', key: segmentKey(d), message: `index segment ${d} is missing; ${by.length} segment${by.length === 1 ? '' : 's'} need${by.length === 1 ? 's' : ''} it as a dep (${by.slice(0, 3).join(', ')})` })
    }
  }

  /** One index segment: its name, its decoding, the packs it lists (their sizes) and its entries' bounds. */
  private *segment(name: string, bytes: Uint8Array | undefined): Generator<RemoteFinding> {
    const key = segmentKey(name)
    if (!bytes) {
      yield this.emit({ kind: 'missing-segment', severity: 'error', key, message: `index segment ${name} was listed but could not be read (deleted meanwhile?)` })
      return
    }
    if (toHex(blake3(bytes)) !== name) {
      yield this.emit({ kind: 'bad-segment', severity: 'error', key, message: `index segment ${key} does not hash to its name (damaged)` })
      return
    }
    let seg: Segment
    try {
      seg = decodeSegment(bytes)
    } catch (err) {
      if (!isCkptError(err)) throw err
      yield this.emit({ kind: 'bad-segment', severity: 'error', key, message: `index segment ${key} does not decode: ${err.message}` })
      return
    }
    this.segIndex.set(name, this.segments.length)
    this.segments.push({ name, seg })
    for (const p of seg.packs) {
      if (this.listedPacks.has(p.hash)) continue
      this.listedPacks.add(p.hash)
      const size = this.packs.get(p.hash)
      const kind = size === undefined ? 'missing-pack' : size < p.size ? 'truncated-pack' : 'pack-size-mismatch'
      const message = size === undefined ? `pack ${packKey(p.hash)} is missing (index segment ${name} lists it)` : `pack ${packKey(p.hash)} has ${size} bytes, index segment ${name} says ${p.size}`
      if (size !== p.size) yield this.emit({ kind, severity: 'error', key: packKey(p.hash), message })
    }
    let bad = 0
    let first: { pack: string; offset: number } | undefined
    for (let k = 0; k < seg.count; k++) {
      const e = segmentEntry(seg, k)
      const p = seg.packs[e.pack]!
      if (e.offset >= PACK_HEADER_SIZE && e.offset + ENTRY_HEADER_SIZE + e.storedLength <= p.size - FOOTER_SIZE) continue
      bad++
      first ??= { pack: p.hash, offset: e.offset }
    }
    if (first) yield this.emit({ kind: 'bad-index-entry', severity: 'error', key, message: `${bad} entr${bad === 1 ? 'y' : 'ies'} of index segment ${name} lie outside their pack (the first: ${packKey(first.pack)} at ${first.offset})` })
  }

  /** A segment and every segment it reaches through deps (those on the remote and intact). */
  private closure(name: string): Set<string> {
    let c = this.closures.get(name)
    if (c) return c
    c = new Set([name])
    const todo = [name]
    while (todo.length) {
      const si = this.segIndex.get(todo.pop()!)
      if (si === undefined) continue
      for (const d of this.segments[si]!.seg.deps) {
        if (c.has(d)) continue
        c.add(d)
        todo.push(d)
      }
    }
    this.closures.set(name, c)
    return c
  }

  /** Where `cid` is listed: within `closure`, elsewhere in the index, or nowhere. */
  private locate(cid: CidBytes, closure: Set<string>): 'here' | 'elsewhere' | 'nowhere' {
    const found = this.table.find(cid)
    if (found.length === 0) return 'nowhere'
    return found.some((si) => closure.has(this.segments[si]!.name)) ? 'here' : 'elsewhere'
  }

  private async *timelineRecords(): AsyncGenerator<RemoteFinding> {
    const keys: { key: string; name: string }[] = []
    for (const o of await this.keys('tl/')) {
      const name = decodeName(o.key.slice(3))
      if (name === undefined) yield this.stray(o.key, "a timeline record's name (tl/NAME)")
      else keys.push({ key: o.key, name })
    }
    for await (const [{ key, name }, bytes] of inOrder(keys, OBJECTS_IN_FLIGHT, (k) => this.get(k.key))) {
      if (!bytes) continue // removed since the listing
      this.timelines.add(name)
      let problem: string | undefined
      try {
        const v = decodeJson(bytes, key)
        if (v.name !== name) problem = `names timeline ${JSON.stringify(v.name)}, its key ${JSON.stringify(name)}`
        else if (typeof v.lineage !== 'string' || !/^[0-9a-f]{32}$/.test(v.lineage)) problem = 'has no lineage (32 hex digits)'
        else if (typeof v.regions !== 'object' || v.regions === null) problem = 'has no regions'
      } catch (err) {
        if (!isCkptError(err)) throw err
        problem = 'is not JSON'
      }
      if (problem) yield this.emit({ kind: 'bad-timeline-record', severity: 'error', key, message: `timeline record ${key} ${problem}`, timeline: name })
    }
  }

  private async *catalogSegments(): AsyncGenerator<RemoteFinding> {
    const keys: { key: string; name: string; first: bigint; last: bigint; hash: string }[] = []
    for (const o of await this.keys('cs/')) {
      const m = /^cs\/([^/]+)\/([0-9a-f]{16})-([0-9a-f]{16})-([0-9a-f]{16})$/.exec(o.key)
      const name = m ? decodeName(m[1]!) : undefined
      if (!m || name === undefined) yield this.stray(o.key, "a catalog segment's name (cs/NAME/FIRST-LAST-HASH)")
      else keys.push({ key: o.key, name, first: BigInt('0x' + m[2]), last: BigInt('0x' + m[3]), hash: m[4]! })
    }
    const noRecord = new Set<string>()
    let done = 0
    for await (const [k, bytes] of inOrder(keys, OBJECTS_IN_FLIGHT, (x) => this.get(x.key))) {
      this.opts.onProgress?.({ phase: 'catalog', done: done++, total: keys.length, unit: 'objects' })
      if (!bytes) continue // replaced by a compaction since the listing
      if (!this.timelines.has(k.name) && !noRecord.has(k.name)) {
        noRecord.add(k.name)
        yield this.emit({ kind: 'missing-timeline-record', severity: 'error', key: `tl/${encodeURIComponent(k.name)}`, message: `timeline ${k.name} has catalog segments but no record (tl/${encodeURIComponent(k.name)}): a pull of it fails`, timeline: k.name })
      }
      yield* this.catalogSegment(k, bytes)
    }
    // a checkpoint a thinning dropped is no longer the timeline's: it need not be readable
    for (const f of this.unreadable) if (!this.dropped.has(`${f.timeline}@${f.vtime}`)) yield this.emit(f)
    for (const [name, at] of this.catalog) for (const v of at.keys()) if (!this.dropped.has(`${name}@${v}`)) this.n.checkpoints++
  }

  /** One catalog segment: its decoding and name, the index segments it names, its checkpoints' manifests. */
  private *catalogSegment(k: { key: string; name: string; first: bigint; last: bigint; hash: string }, bytes: Uint8Array): Generator<RemoteFinding> {
    const { key, name } = k
    const bad = (message: string) => this.emit({ kind: 'bad-catalog-segment', severity: 'error', key, message: `catalog segment ${key} ${message}`, timeline: name })
    let seg
    try {
      seg = decodeCatalogSegment(bytes, key)
    } catch (err) {
      if (!isCkptError(err)) throw err
      yield bad('does not decode (not a catalog segment): its checkpoints are lost to readers')
      return
    }
    if (!toHex(blake3(bytes)).startsWith(k.hash)) yield bad('does not hash to its name (damaged)')
    if (seg.timeline !== name) yield bad(`names timeline ${JSON.stringify(seg.timeline)}, its key ${JSON.stringify(name)}`)
    const outside = seg.checkpoints.filter((c) => BigInt(c.vtime) < k.first || BigInt(c.vtime) > k.last)
    if (outside.length) yield bad(`lists ${outside.length} checkpoint${outside.length === 1 ? '' : 's'} outside the vtimes its name says (${k.first}..${k.last})`)
    const closure = new Set<string>()
    for (const i of seg.indexes) {
      if (!this.listedSegments.has(i)) yield this.emit({ kind: 'missing-segment', severity: 'error', key, message: `catalog segment ${key} names index segment ${i}, which is missing (${segmentKey(i)})`, timeline: name })
      for (const c of this.closure(i)) closure.add(c)
    }
    for (const c of closure) this.reachedSegments.add(c)
    for (const d of seg.dropped ?? []) this.dropped.add(`${name}@${d.vtime}`)
    let at = this.catalog.get(name)
    if (!at) this.catalog.set(name, (at = new Map()))
    for (const c of seg.checkpoints) {
      let cid: CidBytes
      try {
        cid = parseCid(c.cid)
      } catch {
        yield bad(`lists ${c.cid} at vtime ${c.vtime}, which is not a CID`)
        continue
      }
      const was = at.get(c.vtime)
      if (was !== undefined && was !== c.cid) yield this.emit({ kind: 'catalog-conflict', severity: 'error', key, message: `catalog segment ${key} puts ${c.cid} at ${name}@${c.vtime}, an earlier catalog segment ${was}`, cid: c.cid, timeline: name, vtime: c.vtime })
      if (was === undefined) at.set(c.vtime, c.cid)
      const where = this.locate(cid, closure)
      const why = where === 'nowhere' ? 'no index segment lists its manifest' : 'its manifest is listed only in index segments this catalog segment does not name or reach'
      if (where !== 'here') this.unreadable.push({ kind: 'missing-checkpoint', severity: 'error', key, message: `checkpoint ${name}@${c.vtime} (${c.cid}) cannot be read: ${why}`, cid: c.cid, timeline: name, vtime: c.vtime })
    }
  }

  private async *claimObjects(): AsyncGenerator<RemoteFinding> {
    const pending: { key: string; name: string; vtime: string }[] = []
    const claimed = new Set<string>()
    for (const o of await this.keys('cp/')) {
      const m = /^cp\/([^/]+)\/([0-9a-f]{16})$/.exec(o.key)
      const name = m ? decodeName(m[1]!) : undefined
      if (!m || name === undefined) yield this.stray(o.key, "a claim's name (cp/NAME/VTIME)")
      if (!m || name === undefined) continue
      this.n.claims++
      const vtime = BigInt('0x' + m[2]).toString()
      claimed.add(`${name}@${vtime}`)
      if (!this.catalog.get(name)?.has(vtime) && !this.dropped.has(`${name}@${vtime}`)) pending.push({ key: o.key, name, vtime })
    }
    for await (const [c, bytes] of inOrder(pending, OBJECTS_IN_FLIGHT, (x) => this.get(x.key))) {
      if (!bytes) continue
      let cid: string | undefined
      try {
        const v = decodeJson(bytes, c.key)
        if (typeof v.cid === 'string') cid = v.cid
      } catch (err) {
        if (!isCkptError(err)) throw err
      }
      if (cid === undefined) {
        yield this.emit({ kind: 'bad-claim', severity: 'warning', key: c.key, message: `claim ${c.key} does not decode (it holds ${c.name}@${c.vtime} against other pushers all the same)`, timeline: c.name, vtime: c.vtime })
        continue
      }
      this.n.pendingClaims++
      const message = `${c.name}@${c.vtime} (${cid}) is claimed but no catalog segment lists it: a push that stopped or is running (pushing again from its store completes it)`
      yield this.emit({ kind: 'pending-claim', severity: 'warning', key: c.key, message, ...(/^b[a-z2-7]+$/.test(cid) ? { cid } : {}), timeline: c.name, vtime: c.vtime })
    }
    for (const [name, at] of this.catalog) {
      for (const [vtime, cid] of at) {
        if (claimed.has(`${name}@${vtime}`)) continue
        yield this.emit({ kind: 'unclaimed-checkpoint', severity: 'warning', key: `cp/${encodeURIComponent(name)}/${BigInt(vtime).toString(16).padStart(16, '0')}`, message: `checkpoint ${name}@${vtime} (${cid}) is catalogued but its claim is missing: another pusher could claim its vtime`, cid, timeline: name, vtime })
      }
    }
  }

  /** Segments no catalog segment reaches and packs no segment lists: left by pushes that stopped. */
  private *garbage(): Generator<RemoteFinding> {
    for (const name of this.listedSegments) {
      if (this.reachedSegments.has(name) || !this.segIndex.has(name)) continue
      this.n.unreferencedSegments++
      yield this.emit({ kind: 'unreferenced-segment', severity: 'warning', key: segmentKey(name), message: `index segment ${name} is reached by no catalog segment (a push that stopped, or is running); gc removes it after its margin` })
    }
    for (const [hash, size] of this.packs) {
      if (this.listedPacks.has(hash)) continue
      this.n.unreferencedPacks++
      this.n.unreferencedBytes += size
      yield this.emit({ kind: 'unreferenced-pack', severity: 'warning', key: packKey(hash), message: `pack ${packKey(hash)} (${size} bytes) is listed by no index segment (a push that stopped, or is running); gc removes it after its margin` })
    }
  }

  /** The packs phase 4 reads: every pack a segment lists that is there (deep), or a random share of them. */
  private chosenPacks(): string[] {
    const all = [...this.listedPacks].filter((h) => this.packs.has(h)).sort()
    if (this.opts.deep || all.length === 0) return all
    const n = Math.max(1, Math.ceil((all.length * this.opts.sample!) / 100))
    for (let k = all.length - 1; k > 0; k--) {
      const j = Math.floor(Math.random() * (k + 1))
      ;[all[k], all[j]] = [all[j]!, all[k]!]
    }
    return all.slice(0, n).sort()
  }

  private async *dataPhase(): AsyncGenerator<RemoteFinding> {
    const chosen = this.chosenPacks()
    const want = new Map<string, [number, number][]>(chosen.map((h) => [h, []]))
    for (let si = 0; si < this.segments.length; si++) {
      const seg = this.segments[si]!.seg
      const packs = seg.packs.map((p) => want.get(p.hash))
      for (let k = 0; k < seg.count; k++) {
        const e = seg.entries
        const o = k * SEGMENT_ENTRY_SIZE + 36
        packs[e[o]! | (e[o + 1]! << 8) | (e[o + 2]! << 16) | (e[o + 3]! << 24)]?.push([si, k])
      }
    }
    const total = chosen.reduce((n, h) => n + this.packs.get(h)!, 0)
    let done = 0
    this.opts.onProgress?.({ phase: 'data', done, total, unit: 'bytes' })
    for await (const [hash, bytes] of inOrder(chosen, PACKS_IN_FLIGHT, (h) => this.get(packKey(h)))) {
      this.opts.signal?.throwIfAborted()
      yield* this.pack(hash, bytes, want.get(hash)!)
      want.delete(hash)
      done += this.packs.get(hash)!
      this.opts.onProgress?.({ phase: 'data', done, total, unit: 'bytes' })
    }
  }

  /** One pack, whole: its hash, header, footer, and the entries segments list at it. */
  private *pack(hash: string, bytes: Uint8Array | undefined, listed: [number, number][]): Generator<RemoteFinding> {
    const key = packKey(hash)
    if (!bytes) {
      yield this.emit({ kind: 'missing-pack', severity: 'error', key, message: `pack ${key} was listed but could not be read (deleted meanwhile?)` })
      return
    }
    this.n.dataPacks++
    this.n.dataBytes += bytes.length
    if (toHex(blake3(bytes)) !== hash) yield this.emit({ kind: 'pack-hash-mismatch', severity: 'error', key, message: `pack ${key} does not hash to its name: it is damaged` })
    try {
      decodePackHeader(bytes.subarray(0, PACK_HEADER_SIZE))
    } catch (err) {
      if (!isCkptError(err)) throw err
      yield this.emit({ kind: 'bad-pack-header', severity: 'error', key, offset: 0, message: `pack ${key}: ${err.message}` })
    }
    const at = bytes.length - FOOTER_SIZE
    const footer = at >= PACK_HEADER_SIZE ? decodeFooter(bytes.subarray(at)) : undefined
    if (!footer || footer.dataEnd !== at) yield this.emit({ kind: 'bad-pack-footer', severity: 'error', key, offset: Math.max(0, at), message: `pack ${key} has no intact footer at its end` })
    const entries = listed.map(([si, k]) => ({ si, e: segmentEntry(this.segments[si]!.seg, k) })).sort((a, b) => a.e.offset - b.e.offset)
    for (const { si, e } of entries) yield* this.entry(key, bytes, si, e)
  }

  /** One entry: header, CRC, the block re-hashed; a node's or manifest's links listed in its segment's deps. */
  private *entry(key: string, bytes: Uint8Array, si: number, e: ReturnType<typeof segmentEntry>): Generator<RemoteFinding> {
    const cid = cidToString(e.cid)
    const seg = this.segments[si]!.name
    const damaged = (message: string) => this.emit({ kind: 'damaged-entry', severity: 'error', key, offset: e.offset, cid, message: `pack ${key} at ${e.offset} (block ${cid}, index segment ${seg}): ${message}` })
    const ent = bytes.subarray(e.offset, e.offset + ENTRY_HEADER_SIZE + e.storedLength)
    const payload = entryPayload(ent, e)
    if (isFault(payload)) {
      yield damaged(payload.fault === 'CKPT_BAD_INDEX' ? 'the entry there is not the one the index segment lists (CID, lengths or codec differ)' : payload.message)
      return
    }
    if (ent[10] !== e.kind) yield damaged(`the entry's kind is ${ent[10]}, the index segment says ${e.kind}`)
    if (!entryCrcOk(ent, payload)) {
      yield damaged('the entry fails its checksum')
      return
    }
    // a node delta (codec 3) is proven only through its chain, when read: here its CRC, and its base is listed
    const delta = e.codec === AT_REST.nodeDelta
    const raw = delta ? payload : openPayload(e.codec, payload, e.rawLength, e.cid, 4)
    if (isFault(raw)) {
      yield this.emit({ kind: 'hash-mismatch', severity: 'error', key, offset: e.offset, cid, message: `pack ${key} at ${e.offset}: block ${cid} ${raw.fault === 'CKPT_HASH_MISMATCH' ? 'does not match its hash' : `does not decompress (${raw.message})`}` })
      return
    }
    this.n.dataBlocks++
    if (cidCodec(e.cid) !== DAG_CBOR || (!delta && (e.flags ?? 0) & 1)) return // a gc kept a base-only node (bit 0): its subtree may be gone
    const manifest = e.kind === ENTRY_KIND.manifest
    let links: CidBytes[]
    try {
      links = delta ? [deltaBaseCid(raw)] : manifest ? manifestLinks(raw) : nodeLinks(raw)
    } catch (err) {
      yield this.emit({ kind: manifest ? 'bad-manifest' : 'bad-node', severity: 'error', key, offset: e.offset, cid, message: `pack ${key} at ${e.offset}: ${manifest ? 'manifest' : 'tree node'} ${cid} does not decode: ${(err as Error).message}` })
      return
    }
    const closure = this.closure(seg)
    for (const l of links) {
      const where = this.locate(l, closure)
      if (where === 'here') continue
      const lc = cidToString(l)
      if (this.reportedLinks.has(lc)) continue // a block many nodes link: once
      this.reportedLinks.add(lc)
      yield this.emit(
        where === 'nowhere'
          ? { kind: 'missing-link', severity: 'error', key, offset: e.offset, cid: lc, message: `${manifest ? 'manifest' : 'tree node'} ${cid} (pack ${key} at ${e.offset}) links ${lc}, which no index segment lists` }
          : { kind: 'incomplete-deps', severity: 'error', key: segmentKey(seg), cid: lc, message: `${manifest ? 'manifest' : 'tree node'} ${cid} of index segment ${seg} links ${lc}, listed only in segments outside its deps (a lazy reader cannot find it)` },
      )
    }
  }

  private summary(ms: RemoteVerifySummary['ms']): RemoteVerifySummary {
    const advice: string[] = []
    const url = this.objects.url
    if (this.counts.errors > 0) advice.push(`the objects named above are missing or damaged: a pull of a checkpoint that needs them fails (it never returns wrong bytes); restore them from a copy of the bucket, or push the checkpoints from a store that holds them to a fresh remote`)
    const { pendingClaims: claims, unreferencedPacks: packs, unreferencedSegments: segs } = this.n
    if (claims > 0) advice.push(`${claims} pending claim${claims === 1 ? '' : 's'}: a push that stopped; ckpt push --store DIR ${url} from the store that made ${claims === 1 ? 'it' : 'them'} completes ${claims === 1 ? 'it' : 'them'}`)
    if (packs + segs > 0) advice.push(`unreferenced objects (${packs} packs, ${segs} index segments) are what stopped pushes left; the remote's gc removes them after its time margin`)
    if (!this.opts.deep && this.opts.sample === undefined && this.counts.errors === 0) advice.push(`ckpt verify ${url} --deep fetches every pack and re-hashes every block too`)
    const st = this.objects.stats
    return {
      remote: url,
      clean: this.counts.errors === 0 && this.counts.warnings === 0,
      ok: this.counts.errors === 0,
      ...this.counts,
      segments: this.listedSegments.size,
      packs: this.packs.size,
      packBytes: [...this.packs.values()].reduce((n, s) => n + s, 0),
      blocks: this.segments.reduce((n, s) => n + s.seg.count, 0),
      timelines: this.timelines.size,
      ...this.n,
      ms,
      requests: { gets: st.gets, lists: st.lists },
      bytesIn: st.bytesIn,
      advice,
      damagedKeys: [...this.damagedKeys].sort(),
    }
  }
}

/** NAME of a key segment (encodeURIComponent of a name); undefined when it is not one. */
function decodeName(s: string): string | undefined {
  if (s === '' || s.includes('/')) return undefined
  try {
    return decodeURIComponent(s)
  } catch {
    return undefined
  }
}

/** The CIDs a tree node links (its non-hole slots). */
function nodeLinks(raw: Uint8Array): CidBytes[] {
  const n = decodeNode(raw)
  const out: CidBytes[] = []
  for (let i = 0; i < n.count; i++) if (n.codecs[i]) out.push(cidBytes(n.codecs[i]!, n.digests.subarray(i * 32, i * 32 + 32)))
  return out
}

/** The CIDs a manifest links: its regions' roots and its blobs' chunks (the parent is history, not a link). */
function manifestLinks(raw: Uint8Array): CidBytes[] {
  const m = decodeManifest(raw)
  return [...Object.values(m.regions).flatMap((r) => (r.root ? [r.root] : [])), ...Object.values(m.blobs).flatMap((b) => b.chunks.map((c) => c.cid))]
}
