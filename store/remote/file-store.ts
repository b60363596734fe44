/**
 * file:///DIR: a directory as an object store (tests, NFS). A key is a relative path under DIR
 * ('/'-separated; directories are made as needed). A put writes a temporary file under DIR/.ckpt-tmp/,
 * fsyncs it, then renames it into place (or, create-if-absent, link(2)s it: EEXIST means the key
 * existed, and nothing was written), so a reader never sees half an object and conditionalCreate
 * holds. A crash can leave files in .ckpt-tmp/ (never listed; removed when older than a day on open).
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'
import { CkptError, fsError } from '../../codecs/errors.js'
import type { GetOptions, ObjectInfo, ObjectStore, PutOptions, SyncRangeReader } from './interface.js'
import { checkKey, compareKeys, cutRange, newStats } from './keys.js'

/** where puts stage their bytes; not a key (keys under it are refused) */
export const TMP_DIR = '.ckpt-tmp'

function isMissing(err: unknown): boolean {
  const code = (err as { code?: string }).code
  return code === 'ENOENT' || code === 'ENOTDIR'
}

function checkFileKey(key: string): void {
  checkKey(key)
  if (key === TMP_DIR || key.startsWith(TMP_DIR + '/')) throw new CkptError('CKPT_BAD_ARGUMENT', `object keys under ${TMP_DIR}/ are reserved`, { key })
}

export class FileObjectStore implements ObjectStore {
  readonly conditionalCreate = true
  readonly stats = newStats()

  constructor(readonly url: string, readonly dir: string) {}

  static async open(url: string, dir: string): Promise<FileObjectStore> {
    try {
      await fsp.mkdir(path.join(dir, TMP_DIR), { recursive: true })
    } catch (err) {
      throw fsError(err, `opening the remote ${url}`, { url })
    }
    const s = new FileObjectStore(url, dir)
    await s.sweepTemps()
    return s
  }

  private file(key: string): string {
    checkFileKey(key)
    return path.join(this.dir, ...key.split('/'))
  }

  private fail(err: unknown, op: string, key: string): CkptError {
    return fsError(err, `${op} ${key} on the remote ${this.url}`, { url: this.url, key, op })
  }

  async get(key: string, opts: GetOptions = {}): Promise<Uint8Array | undefined> {
    const file = this.file(key)
    opts.signal?.throwIfAborted()
    this.stats.gets++
    let fh: fsp.FileHandle
    try {
      fh = await fsp.open(file, 'r')
    } catch (err) {
      if (isMissing(err) || (err as { code?: string }).code === 'EISDIR') return undefined
      throw this.fail(err, 'get', key)
    }
    try {
      const st = await fh.stat()
      if (!st.isFile()) return undefined
      const [a, b] = cutRange(st.size, opts.offset, opts.length)
      const out = new Uint8Array(b - a)
      let done = 0
      while (done < out.length) {
        const { bytesRead } = await fh.read(out, done, out.length - done, a + done)
        if (bytesRead === 0) break
        done += bytesRead
      }
      this.stats.bytesIn += done
      return done === out.length ? out : out.subarray(0, done)
    } catch (err) {
      if (err instanceof CkptError) throw err
      throw this.fail(err, 'get', key)
    } finally {
      await fh.close()
    }
  }

  async head(key: string, opts: { signal?: AbortSignal } = {}): Promise<{ size: number } | undefined> {
    const file = this.file(key)
    opts.signal?.throwIfAborted()
    this.stats.heads++
    try {
      const st = await fsp.stat(file)
      return st.isFile() ? { size: st.size } : undefined
    } catch (err) {
      if (isMissing(err)) return undefined
      throw this.fail(err, 'head', key)
    }
  }

  async put(key: string, body: Uint8Array, opts: PutOptions = {}): Promise<boolean> {
    const file = this.file(key)
    opts.signal?.throwIfAborted()
    this.stats.puts++
    const tmp = path.join(this.dir, TMP_DIR, crypto.randomBytes(12).toString('hex'))
    try {
      const fh = await fsp.open(tmp, 'wx')
      try {
        await fh.writeFile(body)
        await fh.sync()
      } finally {
        await fh.close()
      }
      await fsp.mkdir(path.dirname(file), { recursive: true })
      if (opts.ifNoneMatch) {
        try {
          await fsp.link(tmp, file)
        } catch (err) {
          if ((err as { code?: string }).code === 'EEXIST') return false
          throw err
        }
      } else {
        await fsp.rename(tmp, file)
      }
      this.stats.bytesOut += body.length
      return true
    } catch (err) {
      throw this.fail(err, 'put', key)
    } finally {
      await fsp.rm(tmp, { force: true }).catch(() => undefined)
    }
  }

  async *list(prefix: string, opts: { startAfter?: string; signal?: AbortSignal } = {}): AsyncIterable<ObjectInfo> {
    if (typeof prefix !== 'string') throw new TypeError('a list prefix is a string')
    this.stats.lists++
    const cut = prefix.lastIndexOf('/')
    const base = cut < 0 ? '' : prefix.slice(0, cut + 1)
    if (base !== '' && base.split('/').slice(0, -1).some((s) => s === '' || s === '.' || s === '..')) return
    yield* this.walk(base, prefix.slice(base.length), opts.startAfter, opts.signal)
  }

  /** Keys under directory `rel` ('' or ending in '/') whose next name starts with `start`, ascending. */
  private async *walk(rel: string, start: string, after: string | undefined, signal: AbortSignal | undefined): AsyncIterable<ObjectInfo> {
    signal?.throwIfAborted()
    let entries: fs.Dirent[]
    try {
      entries = await fsp.readdir(path.join(this.dir, ...rel.split('/')), { withFileTypes: true })
    } catch (err) {
      if (isMissing(err)) return
      throw this.fail(err, 'list', rel)
    }
    // a directory's keys all begin 'name/', so it sorts as 'name/' among its siblings
    const items = entries
      .filter((e) => e.name.startsWith(start) && !(rel === '' && e.name === TMP_DIR) && (e.isDirectory() || e.isFile()))
      .map((e) => ({ key: rel + e.name + (e.isDirectory() ? '/' : ''), dir: e.isDirectory() }))
      .sort((a, b) => compareKeys(a.key, b.key))
    for (const it of items) {
      if (it.dir) {
        // skip a subtree whose every key is <= after
        if (after !== undefined && !after.startsWith(it.key) && compareKeys(it.key, after) < 0) continue
        yield* this.walk(it.key, '', after, signal)
      } else if (after === undefined || compareKeys(it.key, after) > 0) {
        let size: number
        try {
          size = (await fsp.stat(path.join(this.dir, ...it.key.split('/')))).size
        } catch (err) {
          if (isMissing(err)) continue // deleted meanwhile
          throw this.fail(err, 'list', it.key)
        }
        yield { key: it.key, size }
      }
    }
  }

  async delete(key: string): Promise<void> {
    const file = this.file(key)
    this.stats.deletes++
    try {
      await fsp.unlink(file)
    } catch (err) {
      if (isMissing(err)) return
      throw this.fail(err, 'delete', key)
    }
  }

  async close(): Promise<void> {}

  /** Removes temporary files a crashed put left, older than a day (a running put's are younger). */
  private async sweepTemps(): Promise<void> {
    const dir = path.join(this.dir, TMP_DIR)
    const old = Date.now() - 24 * 3600 * 1000
    for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
      const p = path.join(dir, name)
      const st = await fsp.stat(p).catch(() => undefined)
      if (st && st.mtimeMs < old) await fsp.rm(p, { force: true }).catch(() => undefined)
    }
  }
}

/** Synchronous positioned reads of file:///DIR's objects. */
export function fileSyncReader(url: string, dir: string): SyncRangeReader {
  return {
    read(key: string, offset: number, length: number): Uint8Array | undefined {
      checkFileKey(key)
      const file = path.join(dir, ...key.split('/'))
      let fd: number
      try {
        fd = fs.openSync(file, 'r')
      } catch (err) {
        const code = (err as { code?: string }).code
        if (isMissing(err) || code === 'EISDIR') return undefined
        throw fsError(err, `reading ${key} on the remote ${url}`, { url, key, op: 'read' })
      }
      try {
        const st = fs.fstatSync(fd)
        if (!st.isFile()) return undefined
        const [a, b] = cutRange(st.size, offset, length)
        const out = new Uint8Array(b - a)
        let done = 0
        while (done < out.length) {
          const n = fs.readSync(fd, out, done, out.length - done, a + done)
          if (n === 0) break
          done += n
        }
        return done === out.length ? out : out.subarray(0, done)
      } catch (err) {
        if (err instanceof CkptError) throw err
        throw fsError(err, `reading ${key} on the remote ${url}`, { url, key, op: 'read' })
      } finally {
        fs.closeSync(fd)
      }
    },
    close(): void {},
  }
}
