/**
 * Verify's data phase (phase 3, SPEC.md §16.1): every block (or a sample), read, decompressed and
 * re-hashed on the workers in file order; nodes stored as deltas are resolved and re-encoded. Then
 * the scan cache files a full scan would trust are checked against the trees they name.
 */
import fs from 'node:fs'
import { blake3 } from '../codecs/blake3.js'
import { cidEquals, cidToString, type CidBytes } from '../codecs/cid.js'
import { AT_REST } from '../codecs/compress.js'
import { CkptError, isCkptError } from '../codecs/errors.js'
import { decodeManifest, type Manifest } from '../codecs/manifest.js'
import { decodeSpanTable, SPAN_SIZE, type SpanTable } from '../codecs/scan-cache.js'
import type { NodeEntries } from '../codecs/tree-node.js'
import { ENTRY_BAD, ENTRY_HEADER_SIZE, ENTRY_OK, type BlockLocation, type IndexTable, type Finding, type FindingKind, type Repository } from '../store/index.js'
import { childCid } from './node-compare.js'
import type { WorkerPool } from './pipeline/worker-pool.js'
import { DELTA_MISMATCH, DELTA_UNRESOLVED, type DeltaChainTask } from './pipeline/delta-chains.js'
import { Geometry } from './region-tree.js'
import { readBlocks, walkLeaves } from './restore.js'
import { scanCachePath } from './scan-cache.js'
import type { VerifyState } from './verify-state.js'

/** Whether phase 3 checks the intact block at table index i: every one (deep), or a sample by digest bits, reproducibly. */
function chosen(s: VerifyState, i: number): boolean {
  const t = s.table
  if (t.state[i] !== ENTRY_OK) return false
  const pct = s.opts.deep ? 100 : s.opts.sample!
  return pct >= 100 || (t.cids[i * 36 + 8]! | (t.cids[i * 36 + 9]! << 8)) / 65536 < pct / 100
}

/** deltas per task of the early proof */
const CHAIN_TASK_DELTAS = 4096

/**
 * Phase 3's node deltas, proven early on the workers while the main thread walks the DAG (phase 2):
 * each chain from a node stored whole, with the payloads phase 1 kept. Resolves to what each delta's
 * proof found by table index (DELTA_PROVEN or DELTA_MISMATCH); a delta missing from it (its chain
 * starts at a damaged or unkept node, or it does not apply) is checked by DataCheck as before.
 */
export function proveDeltasEarly(s: VerifyState): Promise<Map<number, number>> {
  const t = s.table
  // each delta's chain: its root (a node stored whole), its base and its depth under the root; root -1: not provable here
  const root = new Int32Array(t.n).fill(-2)
  const parent = new Int32Array(t.n)
  const depth = new Uint8Array(t.n)
  const rootOf = (i: number, hops: number): number => {
    if (root[i] !== -2) return root[i]!
    root[i] = -1
    const payload = s.kept.get(i)
    if (payload === undefined || t.state[i] !== ENTRY_OK || t.cids[i * 36 + 1] !== 0x71 || hops > 255) return -1
    if (t.codec[i] !== AT_REST.nodeDelta) return (root[i] = i)
    // the base's CID leads the delta (table.find reads its first 36 bytes)
    if (payload.length < 36 || payload[0] !== 0x01 || payload[1] !== 0x71 || payload[2] !== 0x1e || payload[3] !== 0x20) return -1
    const b = t.find(payload)
    const r = b < 0 ? -1 : rootOf(b, hops + 1)
    if (r >= 0) {
      parent[i] = b
      depth[i] = t.codec[b] === AT_REST.nodeDelta ? depth[b]! + 1 : 1
    }
    return (root[i] = r)
  }
  const byRoot = new Map<number, number[]>()
  for (let i = 0; i < t.n; i++) {
    if (t.codec[i] !== AT_REST.nodeDelta || !chosen(s, i) || s.proven(i)) continue
    const r = rootOf(i, 0)
    if (r < 0) continue
    let list = byRoot.get(r)
    if (!list) byRoot.set(r, (list = []))
    list.push(i)
  }
  // whole chains per task: a base is proven before the deltas that change it
  const tasks: { bases: number[]; deltas: number[] }[] = []
  let cur = { bases: [] as number[], deltas: [] as number[] }
  for (const [r, list] of byRoot) {
    list.sort((a, b) => depth[a]! - depth[b]!)
    cur.bases.push(r)
    for (const i of list) cur.deltas.push(i)
    if (cur.deltas.length >= CHAIN_TASK_DELTAS) {
      tasks.push(cur)
      cur = { bases: [], deltas: [] }
    }
  }
  if (cur.deltas.length) tasks.push(cur)
  const found = new Map<number, number>()
  // a version's place in its task (bases b as -1 - b, deltas k as k), by table index
  const place = new Int32Array(t.n)
  return Promise.all(
    tasks.map(async (job) => {
      const r = await s.pool.run(chainTask(s, job.bases, job.deltas, parent, place))
      job.deltas.forEach((i, k) => {
        if (r.status[k] !== DELTA_UNRESOLVED) found.set(i, r.status[k]!)
      })
    }),
  ).then(() => found)
}

/** The worker task proving these chains (`deltas` each after the delta it changes; `parent`: each delta's base). */
function chainTask(s: VerifyState, bases: number[], deltas: number[], parent: Int32Array, place: Int32Array): DeltaChainTask {
  const t = s.table
  const cids = t.cids
  let baseBytes = 0
  let deltaBytes = 0
  for (const i of bases) baseBytes += t.stored[i]!
  for (const i of deltas) deltaBytes += t.stored[i]!
  const task: DeltaChainTask = {
    op: 'deltas',
    bases: new Uint8Array(baseBytes),
    baseStored: Uint32Array.from(bases, (i) => t.stored[i]!),
    baseRaw: Uint32Array.from(bases, (i) => t.raw[i]!),
    baseCodecs: Uint8Array.from(bases, (i) => t.codec[i]!),
    deltas: new Uint8Array(deltaBytes),
    deltaStored: Uint32Array.from(deltas, (i) => t.stored[i]!),
    parents: new Int32Array(deltas.length),
    digests: new Uint8Array((bases.length + deltas.length) * 32),
  }
  const digests = task.digests
  const digestOf = (i: number, at: number) => {
    for (let j = 0; j < 32; j++) digests[at + j] = cids[i * 36 + 4 + j]!
  }
  let at = 0
  for (let b = 0; b < bases.length; b++) {
    const i = bases[b]!
    task.bases.set(s.kept.get(i)!, at)
    at += t.stored[i]!
    digestOf(i, b * 32)
    place[i] = -1 - b
  }
  at = 0
  for (let k = 0; k < deltas.length; k++) {
    const i = deltas[k]!
    task.deltas.set(s.kept.get(i)!, at)
    at += t.stored[i]!
    digestOf(i, (bases.length + k) * 32)
    task.parents[k] = place[parent[i]!]!
    place[i] = k
  }
  return task
}

export class DataCheck {
  private readonly t: IndexTable
  private total = 0
  private done = 0

  /** `early`: what proveDeltasEarly found, by table index */
  constructor(
    private readonly s: VerifyState,
    private readonly early = new Map<number, number>(),
  ) {
    this.t = s.table
  }

  /** Phase 3 over every intact block, or the sample the options ask for. */
  async run(): Promise<void> {
    const { plain, deltas, chunks } = this.order()
    this.total = [...plain, ...deltas].reduce((n, i) => n + this.t.stored[i]!, 0)
    const jobs = this.jobs(plain, deltas, chunks)
    const inflight = new Set<Promise<void>>()
    for (const job of jobs) {
      const p: Promise<void> = job().finally(() => inflight.delete(p))
      inflight.add(p)
      if (inflight.size >= Math.max(2, this.s.pool.threads * 2)) await Promise.race(inflight)
    }
    await Promise.all(inflight)
  }

  /** Entries in file order (reads run front to back); sampling picks by digest bits, reproducibly. */
  private order(): { plain: number[]; deltas: number[]; chunks: number[] } {
    const t = this.t
    const plain: number[] = []
    const deltas: number[] = []
    const chunks: number[] = []
    for (let i = 0; i < t.n; i++) {
      if (!chosen(this.s, i)) continue
      const early = this.early.get(i)
      if (this.s.proven(i) || early !== undefined) {
        // read and re-hashed already, by the structure phase's scan of its pack or the early proof of deltas
        if (early === DELTA_MISMATCH) this.damagedAt(i, 'hash-mismatch', 'the node its delta chain gives does not match its hash')
        this.s.dataBlocks++
        this.s.dataBytes += t.raw[i]!
        continue
      }
      ;(t.codec[i] === AT_REST.nodeDelta ? deltas : t.codec[i] === AT_REST.chunkDelta ? chunks : plain).push(i)
    }
    const byPlace = (a: number, b: number) => t.pack[a]! - t.pack[b]! || t.offset[a]! - t.offset[b]!
    plain.sort(byPlace)
    // in file order a node's base (its previous version, written before it) was just resolved
    deltas.sort(byPlace)
    chunks.sort(byPlace)
    return { plain, deltas, chunks }
  }

  /** Jobs of at most 4 MiB of one pack each, then the delta nodes in 512s, then the chunk deltas in 256s. */
  private jobs(plain: number[], deltas: number[], chunks: number[]): (() => Promise<void>)[] {
    const t = this.t
    const jobs: (() => Promise<void>)[] = []
    let cur: number[] = []
    let bytes = 0
    for (const i of plain) {
      if (cur.length && (t.pack[cur[0]!] !== t.pack[i] || bytes >= 4 << 20)) {
        const list = cur
        jobs.push(() => this.readCheck(list))
        cur = []
        bytes = 0
      }
      cur.push(i)
      bytes += t.stored[i]!
    }
    if (cur.length) {
      const list = cur
      jobs.push(() => this.readCheck(list))
    }
    for (let k = 0; k < deltas.length; k += 512) {
      const list = deltas.slice(k, k + 512)
      jobs.push(() => this.nodeCheck(list))
    }
    for (let k = 0; k < chunks.length; k += 256) {
      const list = chunks.slice(k, k + 256)
      jobs.push(() => this.chunkCheck(list))
    }
    return jobs
  }

  private progress(list: number[]): void {
    const t = this.t
    for (const i of list) {
      this.s.dataBlocks++
      this.s.dataBytes += t.raw[i]!
      this.done += t.stored[i]!
    }
    this.s.opts.onProgress?.({ phase: 'data', done: this.done, total: this.total, unit: 'bytes' })
  }

  private damagedAt(i: number, kind: FindingKind, why: string): void {
    const t = this.t
    this.s.markDamaged(t.cid(i), kind, `block ${cidToString(t.cid(i))} in pack ${t.pack[i]} at offset ${t.offset[i]}: ${why}`, { pack: t.pack[i], offset: t.offset[i] })
    // no longer an intact copy: the walk that follows charges every checkpoint reaching it
    t.state[i] = ENTRY_BAD
    this.s.nodes.delete(i)
  }

  /** Stored blocks: read, decompressed and re-hashed on a worker. */
  private async readCheck(list: number[]): Promise<void> {
    const t = this.t
    const blocks = this.s.repo.blocks
    let at = 0
    while (at < list.length) {
      const part = list.slice(at)
      const file = blocks.io.filePath(t.pack[part[0]!]!)
      // the memory backend has no files: the payloads go along
      let payloads: Uint8Array | undefined
      if (file === undefined) {
        payloads = new Uint8Array(part.reduce((n, i) => n + t.stored[i]!, 0))
        let p = 0
        for (const i of part) {
          payloads.set(blocks.io.read(t.pack[i]!, t.offset[i]! + ENTRY_HEADER_SIZE, t.stored[i]!), p)
          p += t.stored[i]!
        }
      }
      let po = 0
      const cids = new Uint8Array(part.length * 36)
      part.forEach((i, k) => cids.set(t.cids.subarray(i * 36, i * 36 + 36), k * 36))
      const r = await this.s.pool.run({
        op: 'read',
        files: file === undefined ? undefined : [file],
        fileIdx: file === undefined ? undefined : new Uint32Array(part.length),
        payloads,
        offsets: Float64Array.from(part, (i) => {
          if (file !== undefined) return t.offset[i]!
          const o = po
          po += t.stored[i]!
          return o
        }),
        storedLengths: Uint32Array.from(part, (i) => t.stored[i]!),
        codes: Uint8Array.from(part, (i) => t.codec[i]!),
        rawLengths: Uint32Array.from(part, (i) => t.raw[i]!),
        cids,
        outOffsets: new Float64Array(part.length),
        verifyOnly: true,
      })
      if (r.bad < 0) break
      this.damagedAt(part[r.bad]!, r.code === 'CKPT_HASH_MISMATCH' ? 'hash-mismatch' : 'undecodable-block', r.message ?? 'unreadable')
      at += r.bad + 1
    }
    this.progress(list)
  }

  /**
   * Chunks stored as deltas: each read through the block store at this entry, its chain resolved and
   * every version on it proven (store/chunk-chain.ts); a chunk whose chain fails is damaged here.
   */
  private async chunkCheck(list: number[]): Promise<void> {
    const t = this.t
    for (const i of list) {
      const loc: BlockLocation = { pack: t.pack[i]!, offset: t.offset[i]!, storedLength: t.stored[i]!, rawLength: t.raw[i]!, codec: t.codec[i]!, depth: t.depth[i]! }
      try {
        this.s.repo.blocks.getAt(t.cid(i), loc)
      } catch (err) {
        if (!isCkptError(err)) throw err
        this.damagedAt(i, err.code === 'CKPT_HASH_MISMATCH' ? 'hash-mismatch' : 'undecodable-block', err.message)
      }
    }
    this.progress(list)
    await Promise.resolve()
  }

  /** Nodes stored as deltas: resolved here (from the walk's decoded nodes), encoded and hashed on a worker. */
  private async nodeCheck(list: number[]): Promise<void> {
    const t = this.t
    const ok: number[] = []
    const entries: NodeEntries[] = []
    for (const i of list) {
      const e = this.s.node(t.cid(i))
      if ('error' in e) this.damagedAt(i, 'undecodable-block', e.error.message)
      else {
        ok.push(i)
        entries.push(e)
      }
    }
    const slots = entries.reduce((n, e) => n + e.count, 0)
    const task = { op: 'nodes' as const, counts: Uint32Array.from(entries, (e) => e.count), codecs: new Uint8Array(slots), digests: new Uint8Array(slots * 32) }
    let at = 0
    for (const e of entries) {
      task.codecs.set(e.codecs, at)
      task.digests.set(e.digests, at * 32)
      at += e.count
    }
    const r = await this.s.pool.run(task, [task.counts.buffer, task.codecs.buffer, task.digests.buffer] as ArrayBuffer[])
    ok.forEach((i, k) => {
      for (let j = 0; j < 32; j++) {
        if (r.hashes[k * 32 + j] !== t.cids[i * 36 + 4 + j]) {
          this.damagedAt(i, 'hash-mismatch', 'the node its delta chain gives does not match its hash')
          return
        }
      }
    })
    this.progress(list)
  }
}

/**
 * The scan cache files a full scan would trust (their keyed sum holds, SPEC.md §18) must hold the
 * span digests of the tree they name: a file that does not would make `add` keep stale content for
 * the spans it claims unchanged. Each such file's region is read (verified) once.
 */
export async function* checkScanCaches(s: VerifyState): AsyncGenerator<Finding> {
  const repo = s.repo
  if (repo.memory) return
  const key = await repo.scanKey({ create: false })
  if (!key) return
  for await (const rec of repo.timelines({ skipMalformed: true })) {
    const head = await repo.latest(rec.name).catch(() => undefined)
    let regions: Manifest['regions'] = {}
    if (head) {
      try {
        regions = decodeManifest(repo.blocks.get(head.cid)).regions
      } catch {}
    }
    for (const [region, spec] of Object.entries(rec.regions ?? {})) {
      const file = scanCachePath(repo.dir, rec.name, region)
      let bytes: Uint8Array
      try {
        bytes = fs.readFileSync(file)
      } catch {
        continue
      }
      const table = decodeSpanTable(bytes, key)
      if (!table || table.size !== spec.size || table.chunkSize !== spec.chunkSize || table.spanSize !== SPAN_SIZE) continue
      // a scan trusts a file only for the tree it diffs against, the head's: any other is never used
      const headRoot = regions[region]?.root
      if (!headRoot || !cidEquals(headRoot, table.root)) continue
      const geo = new Geometry(table.size, table.chunkSize, regions[region]!.fanout)
      let bad: number | undefined
      try {
        bad = await firstWrongSpan(repo, s.pool, geo, table)
      } catch (err) {
        if (!isCkptError(err)) throw err
        // the tree it names cannot be read: the scan would not use it (its root is no head's), or the
        // walk reports the damage
        continue
      }
      if (bad === undefined) continue
      yield s.emit({
        phase: 'data',
        kind: 'bad-scan-cache',
        severity: 'warning',
        message: `the scan cache of timeline ${rec.name}, region ${region} (${file}) holds digests its tree does not (first at span ${bad}): a full scan would keep stale content for the spans it claims unchanged; delete the file (ckpt add --no-scan-cache writes it anew)`,
        path: file,
      })
    }
  }
}

/**
 * The first span whose digest (or zero flag) in `table` is not that of the tree `table.root` names;
 * undefined when every span agrees. Reads the region's chunks in order, verified on the worker pool.
 */
async function firstWrongSpan(repo: Repository, pool: WorkerPool, geo: Geometry, table: SpanTable): Promise<number | undefined> {
  const leaves: (NodeEntries | null)[] = []
  walkLeaves(repo.blocks, geo, table.root, (_j, e) => leaves.push(e))
  const per = table.spanSize / geo.chunkSize
  const spans = table.zero.length
  const zeros = new Uint8Array(table.spanSize)
  const BATCH = 64
  for (let first = 0; first < spans; first += BATCH) {
    const last = Math.min(spans, first + BATCH)
    const from = first * per
    const to = Math.min(geo.chunks, last * per)
    const cids: CidBytes[] = []
    const at: number[] = []
    for (let i = from; i < to; i++) {
      const e = leaves[Math.floor(i / geo.fanout)]
      const s = i % geo.fanout
      if (e && e.codecs[s]) {
        cids.push(childCid(e, s))
        at.push(i)
      }
    }
    const locs = await repo.blocks.locateMany(cids)
    if (locs.some((l) => l === undefined)) throw new CkptError('CKPT_NOT_FOUND', 'a chunk of the tree is missing')
    const data = cids.length ? await readBlocks(repo.blocks, pool, cids, locs as BlockLocation[]) : new Uint8Array(0)
    const bytes = new Uint8Array((to - from) * geo.chunkSize)
    let o = 0
    at.forEach((i, k) => {
      const len = locs[k]!.rawLength
      bytes.set(data.subarray(o, o + len), (i - from) * geo.chunkSize)
      o += len
    })
    for (let sp = first; sp < last; sp++) {
      const start = (sp - first) * table.spanSize
      const end = Math.min(bytes.length, start + table.spanSize, geo.size - first * table.spanSize)
      const span = bytes.subarray(start, end)
      const isZero = Buffer.from(span.buffer, span.byteOffset, span.byteLength).equals(zeros.subarray(0, span.length))
      if (isZero !== (table.zero[sp] === 1)) return sp
      if (isZero) continue
      const d = blake3(span)
      for (let k = 0; k < 32; k++) if (d[k] !== table.digests[sp * 32 + k]) return sp
    }
  }
  return undefined
}
