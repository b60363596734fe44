/**
 * Where pack bytes live (the PackIO of store/interface.ts). FilePackIO keeps one file per pack under
 * <store>/packs; MemoryPackIO keeps them in memory for unit tests. Reads are synchronous on purpose: a block read is a small pread from the page
 * cache (a few µs), far below the cost of a round trip through libuv's thread pool.
 */
import fs from 'node:fs'
import path from 'node:path'
import { CkptError, fsError } from '../codecs/errors.js'
import type { PackIO } from './interface.js'
import { fileReader, type PackReader } from './pack-scan.js'
import { syncDirectory } from './replace-file.js'

export type { PackIO }

export function packFileName(packNo: number): string {
  return `${packNo.toString().padStart(8, '0')}.pack`
}

function ioError(err: unknown, what: string, details: Record<string, unknown>): CkptError {
  return fsError(err, what, details)
}

export class FilePackIO implements PackIO {
  private readonly fds = new Map<number, number>()
  private readonly sizes = new Map<number, number>()

  /** `readOnly`: never creates, writes or moves anything (reads only) */
  constructor(
    readonly dir: string,
    readonly readOnly = false,
  ) {
    if (!readOnly) {
      try {
        fs.mkdirSync(dir, { recursive: true })
      } catch (err) {
        throw fsError(err, `cannot create ${dir}`, { path: dir })
      }
    }
  }

  describe(packNo: number): string {
    return path.join(this.dir, packFileName(packNo))
  }

  filePath(packNo: number): string {
    return this.describe(packNo)
  }

  reader(packNo: number): PackReader {
    try {
      return fileReader(this.describe(packNo))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new CkptError('CKPT_BAD_PACK', `pack file ${this.describe(packNo)} is missing`, { pack: packNo })
      throw ioError(err, 'opening a pack', { pack: packNo })
    }
  }

  list(): number[] {
    let names: string[]
    try {
      names = fs.readdirSync(this.dir)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw fsError(err, `cannot list ${this.dir}`, { path: this.dir })
    }
    return names
      .filter((f) => /^\d{8}\.pack$/.test(f))
      .map((f) => Number.parseInt(f, 10))
      .sort((a, b) => a - b)
  }

  exists(packNo: number): boolean {
    return fs.existsSync(this.describe(packNo))
  }

  private fd(packNo: number): number {
    let fd = this.fds.get(packNo)
    if (fd === undefined) {
      try {
        fd = fs.openSync(this.describe(packNo), 'r')
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          throw new CkptError('CKPT_BAD_PACK', `pack file ${this.describe(packNo)} is missing`, { pack: packNo })
        }
        throw ioError(err, 'opening a pack', { pack: packNo })
      }
      this.fds.set(packNo, fd)
    }
    return fd
  }

  size(packNo: number): number {
    const s = this.sizes.get(packNo)
    if (s !== undefined) return s
    return fs.fstatSync(this.fd(packNo)).size
  }

  openForAppend(packNo: number, length: number): void {
    if (this.readOnly) throw new CkptError('CKPT_READ_ONLY', 'the store is open read-only', { pack: packNo })
    const old = this.fds.get(packNo)
    if (old !== undefined) fs.closeSync(old)
    try {
      const file = this.describe(packNo)
      let fd: number
      try {
        fd = fs.openSync(file, fs.constants.O_RDWR)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
        fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644)
        // a new pack's name is made durable now: the commits that fdatasync its data later do not
        // cover the directory entry, and a crash must not lose a pack whose commits were acknowledged
        try {
          syncDirectory(this.dir)
        } catch (e) {
          fs.closeSync(fd)
          throw e
        }
      }
      if (fs.fstatSync(fd).size !== length) fs.ftruncateSync(fd, length)
      this.fds.set(packNo, fd)
      this.sizes.set(packNo, length)
    } catch (err) {
      throw ioError(err, 'opening a pack for append', { pack: packNo })
    }
  }

  append(packNo: number, bytes: Uint8Array): void {
    const fd = this.fds.get(packNo)
    const at = this.sizes.get(packNo)
    if (fd === undefined || at === undefined) throw new Error(`pack ${packNo} is not open for append`)
    try {
      let done = 0
      while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done, at + done)
      this.sizes.set(packNo, at + bytes.length)
    } catch (err) {
      // Leave the file as long as what was acknowledged; the caller's commit fails and nothing points past it.
      try {
        fs.ftruncateSync(fd, at)
      } catch {}
      throw ioError(err, 'appending to a pack', { pack: packNo })
    }
  }

  seal(packNo: number): void {
    try {
      fs.fsyncSync(this.fd(packNo))
    } catch (err) {
      throw ioError(err, 'syncing a pack', { pack: packNo })
    }
    // complete: no more appends (reads go on through the same descriptor)
    this.sizes.delete(packNo)
  }

  syncAsync(packNo: number): Promise<void> {
    const fd = this.fd(packNo)
    return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(ioError(err, 'syncing a pack', { pack: packNo })) : resolve())))
  }

  read(packNo: number, offset: number, length: number): Uint8Array {
    return this.readInto(packNo, offset, Buffer.allocUnsafe(length))
  }

  readInto(packNo: number, offset: number, out: Uint8Array): Uint8Array {
    const length = out.length
    let got = 0
    try {
      while (got < length) {
        const n = fs.readSync(this.fd(packNo), out, got, length - got, offset + got)
        if (n === 0) break
        got += n
      }
    } catch (err) {
      if (err instanceof CkptError) throw err
      throw ioError(err, 'reading a pack', { pack: packNo, offset })
    }
    if (got < length) {
      throw new CkptError('CKPT_BAD_PACK', `pack ${packNo} is truncated at offset ${offset + got}`, { pack: packNo, offset, length })
    }
    return out
  }

  remove(packNo: number): void {
    const fd = this.fds.get(packNo)
    if (fd !== undefined) fs.closeSync(fd)
    this.fds.delete(packNo)
    this.sizes.delete(packNo)
    fs.rmSync(this.describe(packNo), { force: true })
  }

  quarantined(): string[] {
    const dir = path.join(this.dir, 'orphaned')
    try {
      return fs.readdirSync(dir).filter((f) => /^\d{8}\.pack\.\d+$/.test(f)).sort().map((f) => path.join(dir, f))
    } catch {
      return []
    }
  }

  close(): void {
    for (const fd of this.fds.values()) fs.closeSync(fd)
    this.fds.clear()
    this.sizes.clear()
  }
}

interface MemoryPack {
  buf: Buffer
  len: number
  sealed: boolean
}

export class MemoryPackIO implements PackIO {
  private readonly packs = new Map<number, MemoryPack>()

  describe(packNo: number): string {
    return `memory:${packFileName(packNo)}`
  }
  filePath(): undefined {
    return undefined
  }
  reader(packNo: number): PackReader {
    const p = this.get(packNo)
    return {
      size: p.len,
      read: (into, pos) => {
        const n = Math.max(0, Math.min(into.length, p.len - pos))
        into.set(p.buf.subarray(pos, pos + n))
        return n
      },
    }
  }
  list(): number[] {
    return [...this.packs.keys()].sort((a, b) => a - b)
  }
  exists(packNo: number): boolean {
    return this.packs.has(packNo)
  }
  private get(packNo: number): MemoryPack {
    const p = this.packs.get(packNo)
    if (!p) throw new CkptError('CKPT_BAD_PACK', `pack ${packNo} is missing`, { pack: packNo })
    return p
  }
  size(packNo: number): number {
    return this.get(packNo).len
  }
  openForAppend(packNo: number, length: number): void {
    const p = this.packs.get(packNo) ?? { buf: Buffer.alloc(1 << 16), len: 0, sealed: false }
    p.len = Math.min(p.len, length)
    p.sealed = false
    this.packs.set(packNo, p)
  }
  append(packNo: number, bytes: Uint8Array): void {
    const p = this.get(packNo)
    if (p.sealed) throw new Error(`pack ${packNo} is not open for append`)
    if (p.len + bytes.length > p.buf.length) {
      const nb = Buffer.alloc(Math.max(p.buf.length * 2, p.len + bytes.length))
      p.buf.copy(nb, 0, 0, p.len)
      p.buf = nb
    }
    p.buf.set(bytes, p.len)
    p.len += bytes.length
  }
  async syncAsync(): Promise<void> {}
  seal(packNo: number): void {
    this.get(packNo).sealed = true
  }
  read(packNo: number, offset: number, length: number): Uint8Array {
    return this.readInto(packNo, offset, Buffer.alloc(length))
  }
  readInto(packNo: number, offset: number, out: Uint8Array): Uint8Array {
    const p = this.get(packNo)
    if (offset + out.length > p.len) throw new CkptError('CKPT_BAD_PACK', `pack ${packNo} is truncated`, { pack: packNo, offset, length: out.length })
    out.set(p.buf.subarray(offset, offset + out.length))
    return out
  }
  remove(packNo: number): void {
    this.packs.delete(packNo)
  }
  quarantined(): string[] {
    return []
  }
  close(): void {}
}
