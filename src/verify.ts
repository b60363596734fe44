/**
 * verifyStore: every problem of a store, as typed findings, in phases cheap first (SPEC.md §16.1).
 *
 *   1. structure: the index and the packs agree (store/pack-check.ts). Every pack is scanned front
 *      to back (headers, entries with their checksums, footers); every index entry must point at an
 *      intact entry of its CID, and every intact entry should be indexed.
 *   2. dag: the catalog decodes and agrees with the records in the packs (store/catalog-check.ts);
 *      every checkpoint of the catalog (or of the given refs) is walked from its manifest
 *      (verify-dag.ts): every node decodes and verifies, every link resolves to an intact block of
 *      the right size. A checkpoint is compared with the previous one of its timeline, so only what
 *      changed is looked at; damage in a shared subtree is still charged to every checkpoint that
 *      reaches it.
 *   3. data (deep, or a sample): every block is read, decompressed and re-hashed on the workers
 *      (verify-data.ts).
 *
 * Findings about blocks name the checkpoints they damage. Memory: ~70 bytes per indexed block (the
 * index is held as a table while the phases run), plus two checkpoints' worth of tree nodes.
 */
import type { CID } from 'multiformats/cid'
import { cidToString } from '../codecs/cid.js'
import { CkptError, isCkptError } from '../codecs/errors.js'
import { checkPacks, SeenSet, type CheckpointRef, type Finding } from '../store/index.js'
import type { CkptStore } from './store.js'
import { checkScanCaches, DataCheck, proveDeltasEarly } from './verify-data.js'
import { DagWalk } from './verify-dag.js'
import { VerifyState } from './verify-state.js'

export type { CheckpointRef, Finding, FindingKind, Severity } from '../store/index.js'

export interface VerifyOptions {
  /** only these checkpoints (and the blocks they reach) */
  refs?: (string | CID)[]
  /** phase 3: read, decompress and re-hash every block */
  deep?: boolean
  /** phase 3 on a random sample of this percentage of the blocks (0 < PCT <= 100) */
  sample?: number
  onProgress?: (p: VerifyProgress) => void
}

export interface VerifyProgress {
  phase: 'structure' | 'dag' | 'data'
  done: number
  total: number
  /** what done and total count */
  unit: 'bytes' | 'checkpoints'
}

export interface VerifySummary {
  clean: boolean
  errors: number
  warnings: number
  infos: number
  packs: number
  blocks: number
  checkpoints: number
  damagedCheckpoints: CheckpointRef[]
  /** blocks read and re-hashed in phase 3 */
  dataBlocks: number
  dataBytes: number
  ms: { structure: number; dag: number; data: number }
  /** what to do next */
  advice: string[]
  /** CIDs of damaged or missing blocks (for repair) */
  damagedBlocks: string[]
  /** CIDs of blocks whose entry fails its checksum while their content is intact (repair stores them anew) */
  badChecksums: string[]
}

export async function* verifyStore(store: CkptStore, opts: VerifyOptions = {}): AsyncGenerator<Finding, VerifySummary> {
  if (opts.sample !== undefined && !(typeof opts.sample === 'number' && opts.sample > 0 && opts.sample <= 100)) {
    throw new CkptError('CKPT_BAD_ARGUMENT', 'sample must be a percentage above 0 and at most 100', { sample: opts.sample })
  }
  const ctx = store.context()
  const v = new Verifier(ctx, ctx.repo, ctx.pool, opts)
  try {
    return yield* v.run()
  } finally {
    await v.close()
  }
}


class Verifier {
  private readonly s: VerifyState
  private readonly walk: DagWalk

  constructor(...args: ConstructorParameters<typeof VerifyState>) {
    this.s = new VerifyState(...args)
    this.walk = new DagWalk(this.s)
  }

  async close(): Promise<void> {
    await this.s.clean?.close()
  }

  async *run(): AsyncGenerator<Finding, VerifySummary> {
    const ms = { structure: 0, dag: 0, data: 0 }
    try {
      yield* this.phases(ms)
    } catch (err) {
      // LevelDB itself found its files damaged: what is left cannot be read reliably
      if (!isCkptError(err, 'CKPT_BAD_INDEX')) throw err
      yield this.s.emit({ phase: 'structure', kind: 'corrupt-index', severity: 'error', message: `${err.message}; verification stopped here` })
      this.s.indexFixable = true
    }
    return this.summary(ms)
  }

  private async *phases(ms: VerifySummary['ms']): AsyncGenerator<Finding> {
    let t = performance.now()
    for (const note of this.s.repo.notes) {
      if (note.kind !== 'packs-alone') continue
      // the index could not be used: what follows was checked against an index built from the packs
      const damage = note.reason !== 'unavailable'
      if (damage) this.s.indexFixable = true
      yield this.s.emit({ phase: 'structure', kind: 'index-unavailable', severity: damage ? 'warning' : 'info', message: note.message })
    }
    yield* checkPacks(this.s)
    ms.structure = performance.now() - t
    // phase 3's node deltas are proven on the workers while this thread walks the DAG
    const early = this.s.opts.deep || this.s.opts.sample !== undefined ? proveDeltasEarly(this.s) : undefined
    early?.catch(() => {})
    t = performance.now()
    this.s.clean = await SeenSet.create(undefined, 1 << 16)
    yield* this.walk.dag()
    yield* this.unindexedEntries()
    ms.dag = performance.now() - t
    if (this.s.opts.deep || this.s.opts.sample !== undefined) {
      t = performance.now()
      const before = this.s.damaged.size
      await new DataCheck(this.s, await early).run()
      // blocks found damaged only now: which checkpoints do they hurt? walk again, charging them
      if (this.s.damaged.size > before) {
        this.s.dirtyNodes.clear()
        await this.s.clean.close()
        this.s.clean = await SeenSet.create(undefined, 1 << 16)
        this.s.damagedCheckpoints.length = 0
        for (const d of this.s.damaged.values()) d.checkpoints = []
        for await (const _ of this.walk.dag(true)) {
          // the first walk reported its findings already
        }
      }
      if (this.s.opts.deep && !(this.s.opts.refs && this.s.opts.refs.length)) yield* checkScanCaches(this.s)
      ms.data = performance.now() - t
    }
    for (const d of this.s.damaged.values()) {
      yield this.s.finding({
        phase: d.kind === 'hash-mismatch' || d.kind === 'undecodable-block' ? 'data' : 'dag',
        kind: d.kind,
        severity: d.checkpoints.length ? 'error' : 'warning',
        message: d.checkpoints.length ? `${d.message}; it damages ${d.checkpoints.length} checkpoint${d.checkpoints.length === 1 ? '' : 's'}` : `${d.message} (no checkpoint checked reaches it)`,
        cid: cidToString(d.cid),
        pack: d.pack,
        offset: d.offset,
        checkpoints: d.checkpoints,
      })
    }
  }

  private summary(ms: VerifySummary['ms']): VerifySummary {
    const advice: string[] = []
    const dir = this.s.repo.dir
    const indexProblems = this.s.indexFixable || this.s.warnedKinds.has('unindexed-entry') || this.s.kinds.has('bad-index-value') || this.s.kinds.has('orphan-pack')
    if (this.s.damaged.size > 0) {
      advice.push(`restore the ${this.s.damaged.size} damaged block${this.s.damaged.size === 1 ? '' : 's'} from a copy: ckpt repair --store ${dir} --from BUNDLE_OR_STORE (a bundle exported earlier, or another store holding these checkpoints)`)
    }
    if (indexProblems) advice.push(`rebuild the index from the packs: ckpt repair --store ${dir} --rebuild-index`)
    if (this.s.badChecksums.length > 0 && this.s.damaged.size === 0 && !indexProblems) advice.push(`store the ${this.s.badChecksums.length} block${this.s.badChecksums.length === 1 ? '' : 's'} whose checksum is damaged anew (their content is intact): ckpt repair --store ${dir} --rebuild-index`)
    if (this.s.damagedCheckpoints.length > 0) advice.push(`if no copy exists, remove what cannot be healed (${this.s.damagedCheckpoints.length} checkpoint${this.s.damagedCheckpoints.length === 1 ? '' : 's'}): ckpt repair --store ${dir} --drop-damaged`)
    return {
      clean: this.s.counts.errors === 0 && this.s.counts.warnings === 0,
      ...this.s.counts,
      packs: this.s.repo.blocks.packRecords().size,
      blocks: this.s.table.n,
      checkpoints: this.s.checkpoints,
      damagedCheckpoints: this.s.damagedCheckpoints,
      dataBlocks: this.s.dataBlocks,
      dataBytes: this.s.dataBytes,
      ms,
      advice,
      damagedBlocks: [...this.s.damaged.values()].map((d) => cidToString(d.cid)),
      badChecksums: [...this.s.badChecksums],
    }
  }

  /**
   * Unindexed pack entries, once the walk knows which blocks checkpoints need: one a checkpoint
   * needs (the walk found it missing) is a lost index entry (a warning: rebuild the index); the rest
   * are garbage — blocks gc took out of the index, old copies of rewritten nodes, writes a crash cut
   * short — one note for all of them (gc deletes them when it rewrites their packs).
   */
  private *unindexedEntries(): Generator<Finding> {
    let needed = 0
    for (const [k, u] of this.s.unindexed) {
      if (!this.s.damaged.has(k)) continue
      needed++
      yield this.s.emit({
        phase: 'structure',
        kind: 'unindexed-entry',
        severity: 'warning',
        message: `pack ${u.pack} holds block ${cidToString(u.cid)} at offset ${u.offset}, which the index does not list (a checkpoint needs it)`,
        cid: cidToString(u.cid),
        pack: u.pack,
        offset: u.offset,
      })
    }
    const rest = this.s.unindexedCount - needed
    if (rest > 0) {
      const scope = this.s.opts.refs && this.s.opts.refs.length ? 'the checkpoints checked do not reach' : 'no checkpoint reaches'
      yield this.s.emit({ phase: 'structure', kind: 'unindexed-entry', severity: 'info', message: `${rest} pack entr${rest === 1 ? 'y holds a block' : 'ies hold blocks'} the index does not list and ${scope}: garbage (removed by gc, superseded copies, or writes a crash cut short); gc deletes it when it rewrites the packs` })
    }
  }
}
