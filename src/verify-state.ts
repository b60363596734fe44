/**
 * What verify's phases share (SPEC.md §16.1): the index as a table, the damage found so far and the
 * checkpoints it hurts, the findings' counts, and the tree nodes read on the way.
 */
import { copyOf } from '../codecs/bytes.js'
import type { CatalogRecord } from '../codecs/catalog-record.js'
import { cidKey, cidToString, type CidBytes } from '../codecs/cid.js'
import { AT_REST, decompressBlock } from '../codecs/compress.js'
import { CkptError, isCkptError } from '../codecs/errors.js'
import { applyNodeDelta, deltaBaseCid } from '../codecs/node-delta.js'
import { decodeNode, type NodeEntries } from '../codecs/tree-node.js'
import { ENTRY_HEADER_SIZE, ENTRY_OK, IndexTable, SeenSet, type CatalogCheckState, type CheckpointRef, type Finding, type FindingKind, type PackCheckState, type PackScanOptions, type Repository, compactEvents, joinScans, PACK_HEADER_SIZE, splitPack, type ScanEvent } from '../store/index.js'
import { inlineBudget, type WorkerPool } from './pipeline/worker-pool.js'
import type { ScanTask } from './pipeline/tasks.js'
import type { StoreContext } from './context.js'
import type { VerifyOptions } from './verify.js'

/**
 * A pack of at least twice this many bytes is scanned in parts of about this size (verify's structure
 * phase); CKPT_SCAN_PART_BYTES overrides it.
 */
const SCAN_PART_BYTES = 16 << 20

function scanPartBytes(): number {
  const v = process.env.CKPT_SCAN_PART_BYTES
  const n = v === undefined || v === '' ? NaN : Number(v)
  return Number.isFinite(n) && n >= 4096 ? n : SCAN_PART_BYTES
}

/** present(): a block only a remote holds */
export const REMOTE_ONLY = -2

export class VerifyState implements PackCheckState, CatalogCheckState {
  readonly table = new IndexTable()
  /** damaged or missing blocks -> the checkpoints found to reach them */
  readonly damaged = new Map<string, { cid: CidBytes; kind: FindingKind; message: string; pack?: number; offset?: number; checkpoints: CheckpointRef[] }>()
  /** nodes proven clean, and nodes under which there is damage (keyed by CID) */
  clean: SeenSet | undefined
  readonly dirtyNodes = new Set<string>()
  readonly damagedCheckpoints: CheckpointRef[] = []
  counts = { errors: 0, warnings: 0, infos: 0 }
  checkpoints = 0
  dataBlocks = 0
  dataBytes = 0
  constructor(
    readonly ctx: StoreContext,
    readonly repo: Repository,
    readonly pool: WorkerPool,
    readonly opts: VerifyOptions,
  ) {}

  get onProgress(): VerifyOptions['onProgress'] {
    return this.opts.onProgress
  }

  finding(f: Finding): Finding {
    if (f.severity === 'error') this.counts.errors++
    else if (f.severity === 'warning') this.counts.warnings++
    else this.counts.infos++
    return f
  }

  readonly kinds = new Set<FindingKind>()
  /** kinds of findings above info */
  readonly warnedKinds = new Set<FindingKind>()
  indexFixable = false

  /** The structure phase's pack scans on the worker pool (local pack files only). */
  scanElsewhere(n: number, opts: PackScanOptions): Promise<Iterable<ScanEvent>> | undefined {
    // a store of a few MiB is scanned here: starting the workers would cost more
    this.packBytes ??= [...this.repo.blocks.packRecords().values()].reduce((sum, r) => sum + r.committedLength, 0)
    if (this.pool.threads === 0 || this.packBytes < inlineBudget()) return undefined
    const file = this.repo.blocks.io.filePath(n)
    if (file === undefined) return undefined
    // verify --deep: the scan also re-hashes every block stored whole (the data phase skips those)
    const task: ScanTask = { op: 'scan', file, packNo: n, ...opts, prove: this.opts.deep === true }
    // with --deep, a pack much larger than the others (a first full checkpoint's) is scanned in parts
    // on every worker, or one worker would decompress and hash it while the others idle. (Without it
    // a scan is cheap, the main thread's reading of its events is what bounds the phase, and parts
    // only add work: ~0.1 s more on workload S.)
    const length = this.repo.blocks.packRecords().get(n)?.committedLength ?? 0
    const parts = this.opts.deep === true ? Math.min(64, Math.floor(length / scanPartBytes())) : 0
    return this.pool.whenRunning().then(async (running) => {
      if (!running) throw new Error('no worker threads')
      if (parts >= 2) {
        const scans = await Promise.all(splitPack(PACK_HEADER_SIZE, length, parts).map((part) => this.pool.run({ ...task, ...part })))
        const joined = joinScans(scans)
        if (joined) return compactEvents(joined)
        // damage in a part, or parts that do not join up: the pack whole, as a reader would scan it
      }
      return compactEvents(await this.pool.run(task))
    })
  }

  private packBytes: number | undefined

  /** 1 at the table indexes whose blocks the structure phase's scans proved (verify --deep) */
  private provenFlags = new Uint8Array(0)

  markProven(i: number): void {
    if (i >= this.provenFlags.length) {
      const grown = new Uint8Array(Math.max(i + 1, this.table.n, this.provenFlags.length * 2))
      grown.set(this.provenFlags)
      this.provenFlags = grown
    }
    this.provenFlags[i] = 1
  }

  /** Whether the structure phase's scan proved the block at table index i. */
  proven(i: number): boolean {
    return this.provenFlags[i] === 1
  }

  emit(f: Finding): Finding {
    this.kinds.add(f.kind)
    if (f.severity !== 'info') this.warnedKinds.add(f.kind)
    return this.finding(f)
  }

  markDamaged(cid: CidBytes, kind: FindingKind, message: string, where: { pack?: number; offset?: number } = {}): void {
    const k = cidKey(cid)
    if (!this.damaged.has(k)) this.damaged.set(k, { cid: copyOf(cid), kind, message, ...where, checkpoints: [] })
  }

  /** pack entries the index does not list (at most MAX_UNINDEXED remembered), by cidKey */
  readonly unindexed = new Map<string, { cid: CidBytes; pack: number; offset: number }>()
  unindexedCount = 0

  /** blocks a lazy pull left on a remote (not checked here: `ckpt verify REMOTE` checks them) */
  remoteOnly = 0

  /**
   * Whether an intact block of this CID is indexed (its table index); damaged and missing ones are
   * recorded (-1). A block only a remote holds (a lazy pull) is REMOTE_ONLY: present, not checked.
   */
  present(cid: CidBytes): number {
    const i = this.table.find(cid)
    if (i < 0) {
      if (this.repo.blocks.remote?.locate(cid)) {
        this.remoteOnly++
        return REMOTE_ONLY
      }
      this.markDamaged(cid, 'missing-block', `block ${cidToString(cid)} is not in the store`)
      return -1
    }
    return this.table.state[i] === ENTRY_OK ? i : -1
  }

  /** at-rest payloads of dag-cbor entries, kept from the scan (at most KEEP_NODE_BYTES) */
  readonly kept = new Map<number, Uint8Array>()
  keptBytes = 0
  /** decoded nodes by table index (a bounded cache: the walk needs the previous checkpoint's) */
  readonly nodes = new Map<number, NodeEntries>()
  scratch = Buffer.allocUnsafe(64 << 10)

  /**
   * A tree node decoded from its intact pack entry (phase 1 checked its checksum), resolving delta
   * chains, without re-hashing: that is phase 3's work (getNode), which also catches a node that
   * decodes but is not what its CID names.
   */
  node(cid: CidBytes, hops = 0): NodeEntries | { error: CkptError } {
    const i = this.table.find(cid)
    if (i < 0 || this.table.state[i] !== ENTRY_OK) return { error: new CkptError('CKPT_NOT_FOUND', `block ${cidToString(cid)} has no intact copy`) }
    const hit = this.nodes.get(i)
    if (hit) return hit
    const t = this.table
    const stored = t.stored[i]!
    if (this.scratch.length < stored) this.scratch = Buffer.allocUnsafe(stored)
    try {
      const payload = this.kept.get(i) ?? this.repo.blocks.io.readInto(t.pack[i]!, t.offset[i]! + ENTRY_HEADER_SIZE, this.scratch.subarray(0, stored))
      let e: NodeEntries
      if (t.codec[i] === AT_REST.nodeDelta) {
        if (hops > 255) throw new CkptError('CKPT_BAD_NODE', `the delta chain of ${cidToString(cid)} does not end`)
        const baseCid = deltaBaseCid(payload)
        const delta = copyOf(payload)
        const base = this.node(baseCid, hops + 1)
        if ('error' in base) {
          // a damaged base: the chain may still give this node (a later change overwrote what the
          // damage touched); the read path resolves it from the bytes there and re-hashes it
          try {
            e = this.repo.blocks.getNodeBytes(cid, false).entries
          } catch {
            return { error: new CkptError(base.error.code, `tree node ${cidToString(cid)} is stored as a change of ${cidToString(baseCid)}, which is damaged: ${base.error.message}`) }
          }
          if (this.nodes.size >= 4096) this.nodes.delete(this.nodes.keys().next().value!)
          this.nodes.set(i, e)
          return e
        }
        e = applyNodeDelta(base, delta)
      } else {
        e = decodeNode(decompressBlock(t.codec[i]!, payload, t.raw[i]!))
      }
      if (this.nodes.size >= 4096) this.nodes.delete(this.nodes.keys().next().value!)
      this.nodes.set(i, e)
      return e
    } catch (err) {
      if (!isCkptError(err)) throw err
      return { error: err }
    }
  }

  /** blocks whose entry fails its checksum while their content is intact (repair stores them anew) */
  readonly badChecksums: string[] = []

  /** Whether a block reads back right through the store's read path (which re-hashes, ignoring checksums). */
  contentIntact(cid: CidBytes): boolean {
    try {
      this.repo.blocks.get(cid)
      return true
    } catch (err) {
      if (!isCkptError(err)) throw err
      return false
    }
  }

  /** catalog records found in the packs (phase 1), for the comparison with the catalog */
  readonly records: CatalogRecord[] = []
}
