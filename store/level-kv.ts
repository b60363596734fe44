import fs from 'node:fs'
import path from 'node:path'
import { Level } from 'level'
import { CkptError, errnoCode } from '../codecs/errors.js'
import type { KV, KVOp, KVRange } from './kv.js'

/** A LevelDB read failure as a CkptError: corruption of its files is CKPT_BAD_INDEX (repair --rebuild-index). */
function readError(err: unknown): CkptError {
  const code = (err as { code?: string }).code ?? (err as { cause?: { code?: string } }).cause?.code
  const text = `${(err as Error).message} ${((err as { cause?: Error }).cause)?.message ?? ''}`
  if (code === 'LEVEL_CORRUPTION' || /corrupt/i.test(text)) return new CkptError('CKPT_BAD_INDEX', `the index is corrupt: ${(err as Error).message}`, {}, err)
  return new CkptError('CKPT_IO', `index read failed: ${(err as Error).message}`, {}, err)
}

/** Why LevelDB would not open `dir`, as a CkptError with details.state (see LevelKV.open). */
export function openError(dir: string, err: unknown): CkptError {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause
  const text = `${(err as Error).message} ${cause?.message ?? ''}`
  if (cause?.code === 'LEVEL_LOCKED') return new CkptError('CKPT_LOCKED', `store index ${dir} is held by another process`, { dir, state: 'locked' }, err)
  if (/does not exist \(create_if_missing is false\)/.test(text)) return new CkptError('CKPT_BAD_INDEX', `the index ${dir} is missing`, { dir, state: 'missing' }, err)
  if (cause?.code === 'LEVEL_CORRUPTION' || /corrupt/i.test(text)) return new CkptError('CKPT_BAD_INDEX', `the index ${dir} is damaged: ${cause?.message ?? (err as Error).message}`, { dir, state: 'corrupt' }, err)
  const errno = /No space left/i.test(text) ? 'ENOSPC' : /Permission denied|Operation not permitted/i.test(text) ? 'EACCES' : /Read-only file system/i.test(text) ? 'EROFS' : /Disk quota/i.test(text) ? 'EDQUOT' : undefined
  const code = errno ? errnoCode({ code: errno }) : 'CKPT_IO'
  const what = code === 'CKPT_NO_SPACE' ? 'the disk is full' : code === 'CKPT_PERMISSION' ? 'permission denied' : code === 'CKPT_READ_ONLY' ? 'the file system is read-only' : (cause?.message ?? (err as Error).message)
  return new CkptError(code, `cannot open the index ${dir}: ${what}`, { dir, state: 'unavailable', ...(errno ? { errno } : {}) }, err)
}

/**
 * The indexes this process has open, by real path. LevelDB's own LOCK is an fcntl lock, which one
 * process never conflicts with itself on, and its in-process check compares the path as given: the
 * same index opened again through a symlink would be two writers on one database.
 */
const openHere = new Set<string>()

function realPath(dir: string): string {
  try {
    return fs.realpathSync(dir)
  } catch {
    return path.resolve(dir)
  }
}

/** LevelDB through `level`; compression off because values are small ids and locations. */
export class LevelKV implements KV {
  private constructor(
    private readonly db: Level<Uint8Array, Uint8Array>,
    private readonly real: string,
  ) {}

  /**
   * Opens (with `create`, creates) the index. Failures say what they are (details.state): `locked`
   * (CKPT_LOCKED), `missing` (no database there: CKPT_BAD_INDEX), `corrupt` (LevelDB finds its files
   * damaged: CKPT_BAD_INDEX), `unavailable` (the OS refused: CKPT_NO_SPACE, CKPT_PERMISSION,
   * CKPT_READ_ONLY, CKPT_IO) — a full disk or a read-only medium is never called damage.
   */
  static async open(dir: string, opts: { create?: boolean } = {}): Promise<LevelKV> {
    const real = realPath(dir)
    if (openHere.has(real)) throw new CkptError('CKPT_LOCKED', `store index ${dir} is open in this process already`, { dir, state: 'locked' })
    const db = new Level<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view', compression: false, createIfMissing: opts.create !== false })
    try {
      await db.open()
    } catch (err) {
      throw openError(dir, err)
    }
    // the path as it is once opened (created just now, it had no real path before)
    const opened = realPath(dir)
    openHere.add(opened)
    return new LevelKV(db, opened)
  }

  /** LevelDB's own repair of a database that will not open (recovers what its files still hold). */
  static async repair(dir: string): Promise<void> {
    // `level` re-exports classic-level's class on Node; its typings omit the static repair()
    await (Level as unknown as { repair(dir: string): Promise<void> }).repair(dir)
  }

  async get(key: Uint8Array): Promise<Uint8Array | undefined> {
    try {
      return await this.db.get(key)
    } catch (err) {
      throw readError(err)
    }
  }

  getSync(key: Uint8Array): Uint8Array | undefined {
    try {
      return this.db.getSync(key)
    } catch (err) {
      throw readError(err)
    }
  }

  async getMany(keys: Uint8Array[]): Promise<(Uint8Array | undefined)[]> {
    try {
      return await this.db.getMany(keys)
    } catch (err) {
      throw readError(err)
    }
  }

  async batch(ops: KVOp[], options: { sync?: boolean } = {}): Promise<void> {
    if (ops.length === 0) return
    // The chained form: abstract-level's array form costs ~15 ms per 700 ops here, the chained form
    // 4.4 ms including the fsync. classic-level honours `sync` (fsync of its log before resolving).
    const b = this.db.batch()
    for (const op of ops) {
      if (op.type === 'put') b.put(op.key, op.value)
      else b.del(op.key)
    }
    try {
      await (b.write as (opt: object) => Promise<void>).call(b, { sync: options.sync === true })
    } catch (err) {
      // LevelDB reports a full disk in its message ("No space left on device")
      const text = `${(err as Error).message} ${((err as { cause?: Error }).cause)?.message ?? ''}`
      if (/no space|ENOSPC/i.test(text)) throw new CkptError('CKPT_NO_SPACE', 'no space left while writing the index', {}, err)
      throw new CkptError('CKPT_IO', `index write failed: ${(err as Error).message}`, {}, err)
    }
  }

  async *iterate(range: KVRange): AsyncIterable<[Uint8Array, Uint8Array]> {
    // classic-level stops a nextv() once 16 KiB are read by default: ~270 index entries a call.
    // Room for the 1,000 asked (~70 B each, nodes' records larger) saves three round trips in four.
    const it = this.db.iterator({ ...range, limit: range.limit ?? -1, highWaterMarkBytes: 256 << 10 } as Parameters<typeof this.db.iterator>[0])
    try {
      for (;;) {
        let entries: [Uint8Array, Uint8Array][]
        try {
          entries = (await it.nextv(1000)) as [Uint8Array, Uint8Array][]
        } catch (err) {
          throw readError(err)
        }
        if (entries.length === 0) return
        for (const e of entries) yield e as [Uint8Array, Uint8Array]
      }
    } finally {
      await it.close()
    }
  }

  /** LevelDB's compaction of every key: the tables left hold only what is live. */
  async compact(): Promise<void> {
    try {
      // `level` re-exports classic-level's class on Node; its typings omit compactRange()
      await (this.db as unknown as { compactRange(a: Uint8Array, b: Uint8Array): Promise<void> }).compactRange(new Uint8Array([0]), new Uint8Array([0xff, 0xff]))
    } catch (err) {
      throw new CkptError('CKPT_IO', `index compaction failed: ${(err as Error).message}`, {}, err)
    }
  }

  async close(): Promise<void> {
    try {
      await this.db.close()
    } finally {
      openHere.delete(this.real)
    }
  }
}
