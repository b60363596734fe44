/**
 * Bundle import (SPEC.md, "Bundles"): importBundle reads any CAR (v1, or v2 by its payload; plain, zstd or
 * gzip), re-hashes every block against its CID, proves each root's DAG complete (in the bundle or
 * already stored), stores tree nodes as deltas against the same node of the checkpoint's parent where
 * it can, and only then makes the checkpoints visible in one atomic catalog commit. A bad bundle
 * leaves no visible trace; blocks it had written (committed in steps to bound memory) are
 * unreferenced and gc removes them.
 */
import { copyOf } from '../codecs/bytes.js'
import fs from 'node:fs'
import { blake3 } from '../codecs/blake3.js'
import { decompressBundle } from '../codecs/bundle-compress.js'
import { badBundle, CarReader } from '../codecs/car.js'
import { cidDigest, cidEquals, cidKey, cidToString, DAG_CBOR, RAW, type CidBytes } from '../codecs/cid.js'
import { compressBlock, maxBlockPayload } from '../codecs/compress.js'
import { CkptError } from '../codecs/errors.js'
import { decodeManifest, type Manifest } from '../codecs/manifest.js'
import { decodeNode, type NodeEntries } from '../codecs/tree-node.js'
import { ENTRY_HEADER_SIZE, ENTRY_KIND, MAX_BLOCK_SIZE } from '../codecs/pack-format.js'
import { SeenSet, type BlockStore, type Repository } from '../store/index.js'
import { COMPRESSED, type HashResult } from './pipeline/tasks.js'
import { acquireSlab, releaseSlab } from './pipeline/slabs.js'
import type { WorkerPool } from './pipeline/worker-pool.js'
import { checkName } from './refs.js'
import { changedSlots } from './node-compare.js'
import { Geometry, storeNode } from './region-tree.js'
import type { CkptStore } from './store.js'
import type { StoreContext } from './context.js'
import { catalogOps } from './bundle-catalog.js'
import { baseRoot, tmpSetDir } from './bundle-shared.js'
import { badNode, cidCodecOf, cidFrom, ImportKeys, keyBytes, notAManifest, ourCid, RecentNodes } from './bundle-import-util.js'

/**
 * A file as a bundle source: 1 MiB reads into one reused buffer (each chunk is valid until the next
 * is pulled, which is all importBundle needs: it copies what it keeps). Cheaper than a read stream,
 * whose fresh 1 MiB buffer per chunk makes V8 collect more often.
 */
export async function* fileSource(file: string, onRead?: (bytes: number) => void): AsyncIterable<Uint8Array> {
  let fd: number
  try {
    fd = fs.openSync(file, 'r')
  } catch (err) {
    throw new CkptError('CKPT_NOT_FOUND', `cannot read ${file}`, { path: file }, err)
  }
  try {
    // synchronous reads: a 1 MiB read from the page cache takes ~0.1 ms, less than a thread-pool round trip
    const buf = Buffer.allocUnsafe(1 << 20)
    for (;;) {
      let n: number
      try {
        n = fs.readSync(fd, buf, 0, buf.length, null)
      } catch (err) {
        throw new CkptError('CKPT_IO', `reading ${file} failed: ${(err as Error).message}`, { path: file }, err)
      }
      if (n === 0) return
      onRead?.(n)
      yield buf.subarray(0, n)
    }
  } finally {
    fs.closeSync(fd)
  }
}

export interface ImportOptions {
  /** import the bundle's timeline under this name (the bundle must hold one timeline) */
  as?: string
  /** prefix every imported timeline's name with this */
  timelinePrefix?: string
  /** called now and then with the bytes read so far (of the uncompressed CAR) */
  onProgress?: (p: { bytes: number; blocks: number }) => void
  /**
   * For tests and tuning: bytes of staged pack data after which the blocks read so far are
   * committed (a step commit, blocks only, so the transaction stays small). Default 16 MiB.
   */
  stageLimit?: number
}

export interface ImportSummary {
  /** checkpoints (roots) made visible by this import */
  checkpoints: number
  /** roots that were already in the catalog */
  alreadyPresent: number
  timelines: string[]
  /** sections read */
  blocks: number
  /** blocks written to the store */
  newBlocks: number
  /** blocks the store already had (or the bundle held twice) */
  presentBlocks: number
  /** block bytes read (uncompressed) */
  bytes: number
  /** pack bytes written */
  storedBytes: number
  carVersion: number
  roots: string[]
}

/**
 * Staged pack bytes past this are committed (blocks only) so the transaction stays small
 * (ImportOptions.stageLimit). 16 MiB: importing workload S's 100-checkpoint bundle, peak RSS fell
 * from 338 MiB (64 MiB steps) to 272-305 MiB, at the same rate (the step commits cost less than the memory).
 */
const STAGE_LIMIT = 16 << 20
/** Tree nodes waiting for their manifest, at most this many bytes of them; beyond, stored whole. */
const PENDING_NODE_BYTES = 48 << 20
const RAW_BATCH = 1 << 20

interface PendingNode {
  cid: CidBytes
  entries: NodeEntries
  size: number
}

/** A waiting tree node a manifest reaches, with the base checkpoint's node at its place and the slots that differ. */
interface WaitingNode {
  cid: CidBytes
  entries: NodeEntries
  base?: { cid: CidBytes; entries: NodeEntries; slots: number[] }
}

/** One manifest's proof as it goes (Importer.manifest). */
interface Proof {
  /** the checkpoint's CID */
  cid: CidBytes
  /** waiting nodes to store once the manifest is proven, children before their parents */
  toStore: WaitingNode[]
  /** CID keys of the nodes in toStore */
  queued: Set<string>
  /** node keys proven by this manifest (they join `verified` once it is proven whole) */
  provenHere: Set<string>
  /** the first block found neither in the bundle nor in the store */
  missing: { cid: CidBytes; region?: string } | undefined
}

/** A region whose tree is being proven: its shape and the index of the last node of each level. */
interface RegionWalk {
  name: string
  geo: Geometry
  lastAt: number[]
}

export async function importBundle(store: CkptStore, source: AsyncIterable<Uint8Array>, opts: ImportOptions = {}): Promise<ImportSummary> {
  if (source === null || typeof source !== 'object' || typeof (source as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] !== 'function') {
    throw new TypeError('importBundle: source must be an AsyncIterable of Uint8Array chunks')
  }
  if (opts.as !== undefined) checkName('timeline', opts.as)
  if (opts.timelinePrefix !== undefined && opts.timelinePrefix !== '') checkName('timeline', opts.timelinePrefix + 'x')
  if (opts.stageLimit !== undefined && !(typeof opts.stageLimit === 'number' && opts.stageLimit > 0)) {
    throw new CkptError('CKPT_BAD_ARGUMENT', `stageLimit must be a positive number of bytes, not ${String(opts.stageLimit)}`, { stageLimit: String(opts.stageLimit) })
  }
  const ctx = store.context()
  return ctx.exclusive(async () => {
    const { repo } = ctx
    const imp = new Importer(ctx, opts)
    try {
      return await imp.run(source)
    } catch (err) {
      // let worker results still in flight land first, then drop everything staged
      await imp.settle()
      repo.blocks.abort()
      throw err
    } finally {
      await imp.close()
    }
  })
}

class Importer {
  private readonly blocks: BlockStore
  private readonly repo: Repository
  private readonly pool: WorkerPool
  private readonly summary = { blocks: 0, newBlocks: 0, presentBlocks: 0, bytes: 0, storedBytes: 0 }
  private readonly pending = new Map<string, PendingNode>()
  private pendingBytes = 0
  /** manifests proven complete in this import, by CID key */
  private readonly manifests = new Map<string, Manifest>()
  private readonly recent = new RecentNodes()
  private readonly deferred: { cid: CidBytes; bytes: Uint8Array; offset: number }[] = []
  /** tree nodes proven valid, each keyed with the place it was proven for (ImportKeys.node) */
  private verified: SeenSet | undefined
  /**
   * raw blocks this import stored or found stored, each keyed with its length (ImportKeys.raw): the
   * DAG check asks for a chunk *of the length its place needs* without an index lookup
   */
  private here: SeenSet | undefined
  private readonly keys = new ImportKeys()
  /** the header's roots, by CID key: only they are read as manifests */
  private roots = new Map<string, CidBytes>()
  /**
   * proven manifests the store lacks, put into it only just before the final commit: a step commit
   * (commitBlocks) must never make a manifest durable that a failing import would leave behind
   */
  private readonly manifestBlocks: { cid: CidBytes; bytes: Uint8Array }[] = []
  private inflight: Promise<void>[] = []
  private chain: Promise<void> = Promise.resolve()
  private batch: { cids: CidBytes[]; offsets: number[]; lengths: number[]; at: number[]; data: Uint8Array; used: number } | undefined
  private get comp() {
    return this.blocks.compressor
  }
  /** staged pack bytes that make a step commit */
  private readonly stageLimit: number

  constructor(
    private readonly ctx: StoreContext,
    private readonly opts: ImportOptions,
  ) {
    this.repo = ctx.repo
    this.pool = ctx.pool
    this.blocks = ctx.repo.blocks
    this.stageLimit = opts.stageLimit || STAGE_LIMIT
  }

  async settle(): Promise<void> {
    await Promise.allSettled(this.inflight)
    this.inflight = []
  }

  async close(): Promise<void> {
    await this.settle()
    if (this.batch) releaseSlab(this.batch.data)
    this.batch = undefined
    await this.verified?.close()
    await this.here?.close()
  }

  async run(source: AsyncIterable<Uint8Array>): Promise<ImportSummary> {
    this.verified = await SeenSet.create(tmpSetDir(this.ctx, 'import'), 1 << 16)
    this.here = await SeenSet.create(tmpSetDir(this.ctx, 'import-raw'), 1 << 18)
    const reader = new CarReader(decompressBundle(source))
    const header = await reader.header()
    if (header.roots.length === 0) throw badBundle('the bundle lists no roots (no checkpoints)', 0)
    const rootKeys = new Map<string, CidBytes>()
    for (const r of header.roots) {
      const cid = ourCid(r, 0, 'root')
      if (cidCodecOf(cid) !== DAG_CBOR) throw badBundle(`root ${cidToString(cid)} is a raw block, not a checkpoint manifest`, 0, { cid: cidToString(cid) })
      if (rootKeys.has(cidKey(cid))) throw badBundle(`root ${cidToString(cid)} is listed twice`, 0, { cid: cidToString(cid) })
      rootKeys.set(cidKey(cid), cid)
    }
    this.roots = rootKeys
    let lastProgress = 0
    for await (const s of reader.sections()) {
      const cid = ourCid(s.cid, s.offset, 'block')
      if (s.block.length > MAX_BLOCK_SIZE) throw badBundle(`block ${cidToString(cid)} has ${s.block.length} bytes (at most ${MAX_BLOCK_SIZE})`, s.offset, { cid: cidToString(cid) })
      this.summary.blocks++
      this.summary.bytes += s.block.length
      await this.add(cid, s.block, s.offset)
      if (this.blocks.stagedBytes >= this.stageLimit) await this.commitBlocks()
      if (this.opts.onProgress && reader.offset - lastProgress >= 1 << 20) {
        lastProgress = reader.offset
        this.opts.onProgress({ bytes: reader.offset, blocks: this.summary.blocks })
      }
    }
    await this.drain()
    // manifests whose blocks came after them (a pre-order CAR), then roots the bundle did not carry
    for (const d of this.deferred.splice(0)) await this.manifest(d.cid, d.bytes, d.offset, true)
    for (const root of rootKeys.values()) {
      if (this.manifests.has(cidKey(root))) continue
      if (!this.blocks.has(root)) {
        throw new CkptError('CKPT_BUNDLE_INCOMPLETE', `root ${cidToString(root)} is neither in the bundle nor in the store`, { cid: cidToString(root) })
      }
      await this.manifest(root, this.blocks.get(root), -1, true)
    }
    this.pending.clear()
    const catalog = await catalogOps(this.repo, this.manifests, [...rootKeys.values()], this.opts)
    for (const b of this.manifestBlocks.splice(0)) {
      if (this.blocks.has(b.cid)) this.summary.presentBlocks++
      else {
        const c = compressBlock(this.comp, b.bytes)
        this.placed(this.blocks.put(b.cid, c.code, c.bytes, b.bytes.length, { kind: ENTRY_KIND.manifest }), c.bytes.length)
      }
    }
    await this.repo.commit(catalog.ops)
    await this.ctx.timelinesChanged(catalog.timelines)
    this.opts.onProgress?.({ bytes: reader.offset, blocks: this.summary.blocks })
    return {
      checkpoints: catalog.added,
      alreadyPresent: catalog.present,
      timelines: catalog.timelines,
      ...this.summary,
      carVersion: header.version,
      roots: [...rootKeys.values()].map(cidToString),
    }
  }

  private async commitBlocks(): Promise<void> {
    await this.drain()
    await this.repo.commit([])
  }

  // -------------------------------------------------------------------- blocks, hashed on the workers

  /**
   * Blocks are copied into batches of ~1 MiB and hashed on the workers (raw chunks compressed in the
   * same pass); results are handled strictly in bundle order, so a manifest is handled after every
   * block before it.
   */
  private async add(cid: CidBytes, block: Uint8Array, offset: number): Promise<void> {
    if (this.batch && this.batch.used + block.length > this.batch.data.length) await this.dispatch()
    if (!this.batch) this.batch = { cids: [], offsets: [], lengths: [], at: [], data: acquireSlab(Math.max(RAW_BATCH, block.length)), used: 0 }
    const b = this.batch
    b.data.set(block, b.used)
    b.cids.push(cid)
    b.offsets.push(offset)
    b.lengths.push(block.length)
    b.at.push(b.used)
    b.used += block.length
  }

  private async dispatch(): Promise<void> {
    const b = this.batch
    if (!b) return
    this.batch = undefined
    let bound = 0
    const hashOnly = new Uint8Array(b.cids.length)
    for (let k = 0; k < b.cids.length; k++) {
      if (cidCodecOf(b.cids[k]!) === RAW) bound += ENTRY_HEADER_SIZE + maxBlockPayload(this.comp, b.lengths[k]!)
      else hashOnly[k] = 1
    }
    const out = acquireSlab(Math.max(1, bound))
    const task = this.pool.run({
      op: 'hash',
      data: b.data.subarray(0, b.used),
      offsets: Uint32Array.from(b.at),
      lengths: Uint32Array.from(b.lengths),
      compress: true,
      codec: this.comp.code,
      hashOnly,
      // tree nodes decoded there too: the main thread only files them
      decodeNodes: true,
      known: this.blocks.filterView(),
      out,
    })
    task.catch(() => {})
    // in order: this batch's results are handled once the previous batch's are
    const prev = this.chain
    const p = prev
      .then(() => task)
      .then((h) => this.place(b, h as Required<typeof h>))
      .finally(() => {
        releaseSlab(b.data)
        releaseSlab(out)
      })
    p.catch(() => {})
    this.chain = p
    this.inflight.push(p)
    while (this.inflight.length >= this.pool.threads + 2) await this.inflight.shift()
  }

  private async drain(): Promise<void> {
    await this.dispatch()
    while (this.inflight.length) await this.inflight.shift()
  }

  private async place(
    b: { cids: CidBytes[]; offsets: number[]; lengths: number[]; at: number[]; data: Uint8Array },
    h: Required<HashResult>,
  ): Promise<void> {
    let at = 0
    let slot = 0
    for (let k = 0; k < b.cids.length; k++) {
      const cid = b.cids[k]!
      const len = h.compressed[k] === COMPRESSED ? h.outLengths[k]! : 0
      const entry = h.out.subarray(at, at + len)
      at += len
      const bytes = b.data.subarray(b.at[k]!, b.at[k]! + b.lengths[k]!)
      // an all-zero block is not hashed by the worker: hash it here (a bundle may carry one)
      const got = h.zero[k] === 1 ? blake3(bytes) : h.digests.subarray(k * 32, k * 32 + 32)
      if (!cidEquals(got, cidDigest(cid))) {
        throw new CkptError('CKPT_HASH_MISMATCH', `block ${cidToString(cid)} does not match its hash (bundle byte ${b.offsets[k]})`, {
          cid: cidToString(cid),
          offset: b.offsets[k],
        })
      }
      if (cidCodecOf(cid) !== RAW) {
        // the worker's decoding (views of its columns, which the nodes keep), or null: not a tree node
        const count = h.nodeCounts ? h.nodeCounts[k]! : -1
        let node: NodeEntries | null | undefined
        if (count > 0) node = { count, codecs: h.nodeCodecs!.subarray(slot, slot + count), digests: h.nodeDigests!.subarray(slot * 32, (slot + count) * 32) }
        else if (count === 0) node = null
        slot += Math.max(0, count)
        await this.dagCbor(cid, bytes, b.offsets[k]!, node)
        continue
      }
      if (h.compressed[k] === COMPRESSED) this.placed(this.blocks.putEntry(cid, entry, b.lengths[k]!, h.codes[k]!), len - ENTRY_HEADER_SIZE)
      else if (this.here!.has(this.keys.raw(cid, bytes.length)) || this.blocks.has(cid)) this.summary.presentBlocks++
      else {
        const c = compressBlock(this.comp, bytes)
        this.placed(this.blocks.put(cid, c.code, c.bytes, bytes.length), c.bytes.length)
      }
      const rk = this.keys.raw(cid, bytes.length)
      if (!this.here!.has(rk)) this.here!.add(rk)
    }
    await this.here!.flush()
  }

  private placed(stored: boolean, bytes: number): void {
    if (stored) {
      this.summary.newBlocks++
      this.summary.storedBytes += bytes
    } else this.summary.presentBlocks++
  }

  // -------------------------------------------------------------------- dag-cbor blocks

  /**
   * A verified dag-cbor block: a root is a manifest (or the bundle is refused) and is proven; a tree
   * node waits for its manifest; a manifest that is no root is not stored (nothing would catalogue
   * it); anything else is kept as it is.
   */
  private async dagCbor(cid: CidBytes, block: Uint8Array, offset: number, decoded?: NodeEntries | null): Promise<void> {
    const key = cidKey(cid)
    if (this.roots.has(key)) {
      if (this.manifests.has(key)) {
        this.summary.presentBlocks++
        return
      }
      let m: Manifest
      try {
        m = decodeManifest(block)
      } catch (err) {
        throw notAManifest(cid, offset, err)
      }
      await this.manifest(cid, copyOf(block), offset, false, m)
      return
    }
    if (this.pending.has(key)) {
      this.summary.presentBlocks++
      return
    }
    const first = block[0]
    // a tree node is a CBOR array (major type 4), a manifest a map (major type 5)
    if (first !== undefined && first >> 5 === 4) {
      // decoded on the worker already (null: it is no tree node), else here
      let entries: NodeEntries | undefined = decoded ?? undefined
      if (decoded === undefined) {
        try {
          entries = decodeNode(block)
        } catch {}
      }
      if (entries) {
        if (this.blocks.has(cid)) {
          this.summary.presentBlocks++
          return
        }
        const size = entries.count * 33 + 64
        if (this.pendingBytes + size > PENDING_NODE_BYTES) this.spillPending()
        this.pending.set(key, { cid, entries, size })
        this.pendingBytes += size
        return
      }
    }
    if (first !== undefined && first >> 5 === 5) {
      let manifest = false
      try {
        decodeManifest(block)
        manifest = true
      } catch {}
      // a checkpoint the header does not list: stored, it would be a checkpoint no catalog entry names
      if (manifest) return
    }
    // some other dag-cbor block: kept as it is (a foreign DAG may link it)
    if (this.blocks.has(cid)) this.summary.presentBlocks++
    else {
      const c = compressBlock(this.comp, block)
      this.placed(this.blocks.put(cid, c.code, c.bytes, block.length), c.bytes.length)
    }
  }

  /** Too many nodes wait for a manifest (a foreign bundle order): the oldest are stored whole. */
  private spillPending(): void {
    for (const [key, p] of this.pending) {
      if (this.pendingBytes <= PENDING_NODE_BYTES / 2) break
      this.pending.delete(key)
      this.pendingBytes -= p.size
      const r = storeNode(this.blocks, p.cid, p.entries)
      this.placed(true, r.stored)
    }
  }

  private nodeEntries(cid: CidBytes): NodeEntries | undefined {
    const p = this.pending.get(cidKey(cid))
    if (p) return p.entries
    const r = this.recent.get(cid)
    if (r) return r
    return this.blocks.has(cid) ? this.blocks.getNode(cid) : undefined
  }

  /** Whether a tree node was proven valid for this place (node key), in this import or this manifest. */
  private proven(key: string, here: Set<string>): boolean {
    return here.has(key) || this.verified!.has(keyBytes(key))
  }

  /**
   * A raw block's length if it is here (in this bundle or the store): `want` when it has that length
   * (known without an index lookup for blocks this import received), else its real length; -1 when
   * it is nowhere.
   */
  private rawLength(cid: CidBytes, want: number): number {
    if (this.here!.has(this.keys.raw(cid, want))) return want
    const loc = this.blocks.locate(cid)
    if (!loc) return -1
    if (loc.rawLength === want) this.here!.add(this.keys.raw(cid, want))
    return loc.rawLength
  }

  /**
   * A manifest: proves its DAG complete and valid — as strictly as verify judges it (SPEC.md, "Bundles";
   * "verifyStore"): every node of the slot count its place needs, level-1 links raw and higher ones
   * dag-cbor, every chunk of exactly the length its index needs (the last one may be shorter), every
   * blob chunk of the length the manifest states. Where the checkpoint's parent is already proven,
   * only what differs from it is checked. Then the tree nodes it reaches that wait in memory are
   * stored (as deltas against the parent's nodes at the same places); the manifest itself waits for
   * the final commit. An incomplete DAG is deferred to the end of the stream (`final` false) or fails
   * (`final` true); an invalid one fails at once.
   *
   * Work is bounded by the bundle's bytes, whatever sizes the manifest claims: only linked nodes
   * are visited, a node is proven once per kind of place (ImportKeys.node), and a node proven before
   * has only its last slot looked at again where it ends a level of another region's shape.
   */
  private async manifest(cid: CidBytes, bytes: Uint8Array, offset: number, final: boolean, parsed?: Manifest): Promise<void> {
    const key = cidKey(cid)
    if (this.manifests.has(key)) return
    let m: Manifest
    try {
      m = parsed ?? decodeManifest(bytes)
    } catch (err) {
      throw notAManifest(cid, offset, err)
    }
    const base = await this.baseOf(m)
    this.recent.rotate()
    const proof: Proof = { cid, toStore: [], queued: new Set(), provenHere: new Set(), missing: undefined }
    this.proveRegions(proof, m, base)
    if (!proof.missing) this.proveBlobs(proof, m)
    await this.here!.flush()
    const missing = proof.missing
    if (missing) {
      if (!final) {
        this.deferred.push({ cid, bytes, offset })
        return
      }
      throw new CkptError(
        'CKPT_BUNDLE_INCOMPLETE',
        `checkpoint ${cidToString(cid)} is incomplete: block ${cidToString(missing.cid)}${missing.region ? ` of region ${missing.region}` : ''} is neither in the bundle nor in the store`,
        { cid: cidToString(missing.cid), checkpoint: cidToString(cid), region: missing.region },
      )
    }
    this.storeWaiting(proof.toStore)
    for (const k of proof.provenHere) this.verified!.add(keyBytes(k))
    await this.verified!.flush()
    if (this.blocks.has(cid)) this.summary.presentBlocks++
    else this.manifestBlocks.push({ cid, bytes })
    this.manifests.set(key, m)
  }

  /** Proves the regions' trees, region by region, until one is found incomplete (proof.missing). */
  private proveRegions(proof: Proof, m: Manifest, base: Manifest | undefined): void {
    for (const [name, reg] of Object.entries(m.regions)) {
      let geo: Geometry
      try {
        geo = new Geometry(reg.size, reg.chunkSize, reg.fanout)
      } catch (err) {
        throw new CkptError('CKPT_BAD_MANIFEST', `checkpoint ${cidToString(proof.cid)}: region ${name} has an impossible shape`, { cid: cidToString(proof.cid) }, err)
      }
      const lastAt: number[] = []
      for (let l = 0; l <= geo.height; l++) lastAt.push(geo.itemsAt(l) - 1)
      if (!this.walk(proof, { name, geo, lastAt }, reg.root, baseRoot(base, name, reg), geo.height, 0)) break
    }
  }

  /**
   * Proves the subtree of node `c` (at `level`, node `index` of its level), compared with `bc`, the
   * base checkpoint's node at the same place; false when a block is missing (proof.missing).
   */
  private walk(proof: Proof, r: RegionWalk, c: CidBytes | null, bc: CidBytes | null, level: number, index: number): boolean {
    const { name, geo } = r
    if (!c) return true
    if (bc && cidEquals(c, bc)) return true
    if (cidCodecOf(c) !== DAG_CBOR) throw badNode(proof.cid, name, `links a raw block ${cidToString(c)} where a tree node belongs (level ${level})`)
    const placeKey = this.keys.node(c, index === r.lastAt[level] ? 'last' : 'full', level, geo)
    if (this.proven(placeKey, proof.provenHere)) return true
    const e = this.nodeEntries(c)
    if (!e) {
      proof.missing = { cid: c, region: name }
      return false
    }
    if (e.count !== geo.nodeCount(level, index)) throw badNode(proof.cid, name, `node ${cidToString(c)} has ${e.count} slots, expected ${geo.nodeCount(level, index)}`)
    const be = bc ? this.nodeEntries(bc) : undefined
    const same = be && be.count === e.count ? be : undefined
    // slots 0..count-2 proven before (at another place of the same kind): only the last is new here
    const prefixKey = this.keys.node(c, 'prefix', level, geo)
    const slots = same ? changedSlots(e, same) : this.proven(prefixKey, proof.provenHere) ? [e.count - 1] : changedSlots(e, undefined)
    for (const s of slots) {
      const codec = e.codecs[s]!
      if (!codec) continue
      const child = cidFrom(codec, e.digests, s)
      if (level === 1) {
        if (codec !== RAW) throw badNode(proof.cid, name, `leaf ${cidToString(c)} links a dag-cbor block in slot ${s}`)
        const i = index * geo.fanout + s
        const want = geo.chunkLength(i)
        const got = this.rawLength(child, want)
        if (got < 0) {
          proof.missing = { cid: child, region: name }
          return false
        }
        if (got !== want) throw badNode(proof.cid, name, `chunk ${i} (${cidToString(child)}) has ${got} bytes, the region's shape needs ${want}`)
      } else {
        const bchild = same && same.codecs[s] ? cidFrom(same.codecs[s]!, same.digests, s) : null
        if (!this.walk(proof, r, child, bchild, level - 1, index * geo.fanout + s)) return false
      }
    }
    const k = cidKey(c)
    if (this.pending.has(k) && !proof.queued.has(k)) {
      proof.queued.add(k)
      proof.toStore.push({ cid: c, entries: e, base: bc && same ? { cid: bc, entries: same, slots: slots } : undefined })
    }
    proof.provenHere.add(placeKey)
    proof.provenHere.add(prefixKey)
    return true
  }

  /** Proves every blob chunk here and of the length the manifest states, until one is missing (proof.missing). */
  private proveBlobs(proof: Proof, m: Manifest): void {
    for (const [name, blob] of Object.entries(m.blobs)) {
      // the decoder checked the CIDs (raw) and that the lengths add up to the size
      for (const c of blob.chunks) {
        const got = this.rawLength(c.cid, c.length)
        if (got < 0) {
          proof.missing = { cid: c.cid }
          return
        }
        if (got !== c.length) {
          throw new CkptError('CKPT_BAD_MANIFEST', `checkpoint ${cidToString(proof.cid)}: blob ${name} says its chunk ${cidToString(c.cid)} has ${c.length} bytes, it has ${got}`, {
            cid: cidToString(proof.cid),
            chunk: cidToString(c.cid),
          })
        }
      }
    }
  }

  /** Stores the waiting tree nodes a proven manifest reaches, as deltas against their bases where stored. */
  private storeWaiting(toStore: WaitingNode[]): void {
    // children were pushed before their parents: bases (the parent checkpoint's nodes) are stored
    for (const n of toStore) {
      const k = cidKey(n.cid)
      const p = this.pending.get(k)
      if (!p) continue
      this.pending.delete(k)
      this.pendingBytes -= p.size
      const r = storeNode(this.blocks, n.cid, n.entries, n.base && this.blocks.has(n.base.cid) ? n.base : undefined)
      // verified on arrival (its bytes hash to its CID): the next version's base costs no read
      this.recent.set(n.cid, n.entries)
      this.placed(true, r.stored)
    }
  }

  /** The checkpoint's parent, when it is proven complete (in this import, or visible in the store). */
  private async baseOf(m: Manifest): Promise<Manifest | undefined> {
    if (!m.parent) return undefined
    const k = cidKey(m.parent)
    const mine = this.manifests.get(k)
    if (mine) return mine
    if (!(await this.repo.checkpointRecord(m.parent))) return undefined
    try {
      return await this.ctx.manifestOf(m.parent)
    } catch {
      return undefined
    }
  }
}
