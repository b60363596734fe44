/**
 * Output files of restore and export (SPEC.md §17): what a path names decides how it is written.
 *
 *   regular file, or nothing   written under `TARGET.ckpt-partial-PID` beside it, renamed over it when
 *                              complete; removed on every failure (and by the CLI on SIGINT/SIGTERM)
 *   symlink                    followed to its final target, which is written as above; the link stays
 *   block device               written in place (no O_CREAT/O_TRUNC, never renamed), from offset 0;
 *                              opened with O_EXCL: a device in use (mounted) is refused with EBUSY
 *   FIFO, character device     written front to back (a pipe, /dev/null, a tty)
 *   directory, socket          CKPT_BAD_ARGUMENT, nothing written
 *
 * Operating-system errors come out as CKPT_NO_SPACE / CKPT_PERMISSION / CKPT_READ_ONLY / CKPT_IO.
 */
import fs from 'node:fs'
import path from 'node:path'
import { CkptError, fsError } from '../codecs/errors.js'
import { partialName, renameOver, replaceFile, syncDirectory } from '../store/index.js'

/**
 * How a resolved output is written: `file` under a temporary name then renamed, `block` in place at
 * its offsets, `stream` front to back.
 */
export type OutputKind = 'file' | 'block' | 'stream'

export interface OutputTarget {
  /** the path as given */
  path: string
  /** the file actually written: `path` with every symlink followed (absolute) */
  target: string
  kind: OutputKind
  /** whether `target` exists already */
  exists: boolean
  /** an existing regular file's permission bits: the file that replaces it gets them too */
  mode?: number
  /** a block device's size in bytes, when the system says (Linux: /sys/dev/block) */
  deviceSize?: number
}

const MAX_LINKS = 40

/** What `p` names, symlinks followed; CKPT_BAD_ARGUMENT for a directory or a socket. */
export function resolveOutput(p: string): OutputTarget {
  if (typeof p !== 'string' || p === '') throw new CkptError('CKPT_BAD_ARGUMENT', 'an output path must be a non-empty string', { path: p })
  let target = path.resolve(p)
  for (let hops = 0; ; hops++) {
    let st: fs.Stats
    try {
      st = fs.lstatSync(target)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { path: p, target, kind: 'file', exists: false }
      throw writeError(err, target)
    }
    if (st.isSymbolicLink()) {
      if (hops >= MAX_LINKS) throw new CkptError('CKPT_BAD_ARGUMENT', `cannot write ${p}: too many levels of symbolic links`, { path: p })
      let link: string
      let dir: string
      try {
        link = fs.readlinkSync(target)
        // the link is relative to the directory it is in, as the kernel sees it (not lexically)
        dir = fs.realpathSync(path.dirname(target))
      } catch (err) {
        throw writeError(err, target)
      }
      target = path.resolve(dir, link)
      continue
    }
    if (st.isFile()) return { path: p, target, kind: 'file', exists: true, mode: st.mode & 0o7777 }
    if (st.isDirectory()) throw new CkptError('CKPT_BAD_ARGUMENT', `${target} is a directory: give a file to write`, { path: p, target })
    if (st.isBlockDevice()) return { path: p, target, kind: 'block', exists: true, deviceSize: blockDeviceSize(st.rdev) }
    if (st.isCharacterDevice() || st.isFIFO()) return { path: p, target, kind: 'stream', exists: true }
    throw new CkptError('CKPT_BAD_ARGUMENT', `${target} is a socket: it cannot be written as a file`, { path: p, target })
  }
}

/** A block device's size from sysfs (in 512-byte sectors there), or undefined. */
function blockDeviceSize(rdev: number): number | undefined {
  const r = BigInt(rdev)
  const major = ((r >> 8n) & 0xfffn) | ((r >> 32n) & ~0xfffn)
  const minor = (r & 0xffn) | ((r >> 12n) & ~0xffn)
  try {
    const sectors = Number(fs.readFileSync(`/sys/dev/block/${major}:${minor}/size`, 'utf8').trim())
    return Number.isSafeInteger(sectors) && sectors >= 0 ? sectors * 512 : undefined
  } catch {
    return undefined
  }
}

/**
 * The CkptError of an operating-system error while writing `file`: ENOENT (a directory on the way is
 * missing) is CKPT_NOT_FOUND, the rest as errnoCode() says. CkptErrors pass through, except those
 * that carry an errno as their code (the worker pool re-raises a worker's system error so).
 */
export function writeError(err: unknown, file: string, details: Record<string, unknown> = {}): CkptError {
  const e = systemError(err)
  if (e instanceof CkptError) return e
  if ((e as NodeJS.ErrnoException | undefined)?.code === 'EBUSY') {
    return new CkptError('CKPT_IO', `cannot write ${file}: the device is in use (mounted, or held open exclusively)`, { path: file, ...details, errno: 'EBUSY' }, e)
  }
  if ((e as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
    return new CkptError('CKPT_NOT_FOUND', `cannot write ${file}: ${path.dirname(file)} does not exist`, { path: file, ...details, errno: 'ENOENT' }, e)
  }
  return fsError(e, `cannot write ${file}`, { path: file, ...details })
}

/** A CkptError whose code is an errno (ENOSPC, EACCES...) as the plain system error it stands for. */
export function systemError(err: unknown): unknown {
  if (err instanceof CkptError && !err.code.startsWith('CKPT_')) {
    const msg = err.message.startsWith(err.code + ': ') ? err.message.slice(err.code.length + 2) : err.message
    return Object.assign(new Error(msg, { cause: err }), { code: err.code })
  }
  return err
}

// ---------------------------------------------------------------- temporary files

const partial = new Set<string>()

/** The temporary name a file is written under before it is renamed over `target` (store/replace-file.ts). */
export { partialName }


/** Registers a temporary file or directory for removePartialFiles(). */
export function trackPartial(p: string): void {
  partial.add(p)
}

/** Forgets a temporary file that has been renamed into place. */
export function untrackPartial(p: string): void {
  partial.delete(p)
}

/** Renames a complete temporary file over its target and forgets it. */
export function commitPartial(temp: string, target: string): void {
  renameOver(temp, target)
  untrackPartial(temp)
}

/** Removes a temporary file or directory (if it is there) and forgets it. */
export function dropPartial(p: string): void {
  try {
    fs.rmSync(p, { recursive: true, force: true })
  } catch {}
  partial.delete(p)
}

/** Removes every temporary file of this process, synchronously (for SIGINT/SIGTERM handlers). */
export function removePartialFiles(): void {
  for (const p of [...partial]) dropPartial(p)
}

// ---------------------------------------------------------------- free space

/**
 * CKPT_NO_SPACE (details: path, needed, available) when the file system holding `dir` has fewer than
 * `needed` bytes free for this user. A file system that cannot say is not checked.
 */
export function checkFreeSpace(dir: string, needed: number, file: string): void {
  let available: number
  try {
    const s = fs.statfsSync(dir)
    available = s.bavail * s.bsize
  } catch {
    return
  }
  if (needed > available) {
    throw new CkptError('CKPT_NO_SPACE', `${file} needs ${needed} bytes, the file system of ${dir} has ${available} free`, { path: file, needed, available })
  }
}

/** CKPT_NO_SPACE when a block device is known to be smaller than `needed`. */
export function checkDeviceSize(out: OutputTarget, needed: number): void {
  if (out.deviceSize !== undefined && needed > out.deviceSize) {
    throw new CkptError('CKPT_NO_SPACE', `${out.target} holds ${out.deviceSize} bytes, ${needed} are to be written`, { path: out.target, needed, available: out.deviceSize })
  }
}

// ---------------------------------------------------------------- writing

/** Writes all of `bytes` at `position` (null: the current position) through a file handle. */
export async function writeAll(fh: fs.promises.FileHandle, bytes: Uint8Array, position: number | null): Promise<void> {
  let done = 0
  while (done < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, position === null ? null : position + done)
    if (bytesWritten <= 0) throw Object.assign(new Error('no space left on device, write'), { code: 'ENOSPC' })
    done += bytesWritten
  }
}

/**
 * The open(2) flags of an output written in place: no O_CREAT, no O_TRUNC; O_EXCL on a block device,
 * which Linux refuses (EBUSY) while the device is mounted or held exclusively.
 */
export function inPlaceFlags(out: OutputTarget): number {
  return fs.constants.O_WRONLY | (out.kind === 'block' ? fs.constants.O_EXCL : 0)
}

/** Opens an existing device or FIFO for writing (asynchronously: a FIFO waits for its reader). */
export function openInPlace(out: OutputTarget): Promise<fs.promises.FileHandle> {
  return fs.promises.open(out.target, inPlaceFlags(out))
}

/**
 * A regular file's data synced to the disk as it is written: an fdatasync starts each time SYNC_STEP
 * more bytes have been written since the last one began (one at a time, on libuv's pool, while the
 * writes go on), so the file never holds more than ~2 steps of dirty pages and the final fdatasync,
 * before the rename, has little left to do. Exporting workload S's 660 MB bundle here: one fdatasync
 * at the end took ~200 ms, the last of these ~5 ms; the export's wall time was the same either way
 * (writes wait while an fdatasync of their file runs), so this bounds the dirty pages, not the time.
 */
const SYNC_STEP = 32 << 20

class ProgressiveSync {
  private started = 0
  private pending: Promise<void> | undefined
  private failed: unknown

  constructor(private readonly fh: fs.promises.FileHandle) {}

  /** `bytes` written so far; throws what a background fdatasync failed with */
  wrote(bytes: number): void {
    if (this.failed) throw this.failed
    if (this.pending || bytes - this.started < SYNC_STEP) return
    this.started = bytes
    this.pending = this.fh.datasync().then(
      () => void (this.pending = undefined),
      (err) => {
        this.pending = undefined
        this.failed = err
      },
    )
  }

  /** every byte written is on the disk */
  async finish(): Promise<void> {
    await this.pending
    if (this.failed) throw this.failed
    await this.fh.datasync()
  }

  /** waits for a background fdatasync before the file is closed (its result no longer matters) */
  async settle(): Promise<void> {
    await this.pending
  }
}

export interface WriteOutputOptions {
  /**
   * A regular file is on the disk when the call returns: its data is fdatasynced (as it is written,
   * and once more before the rename) and its directory fsynced after it. Export asks for this; a
   * restore's files are not synced (the store holds their content).
   */
  durable?: boolean
}

/**
 * Writes `data` (bytes, or a stream of them) to the output `p` by the rules above. Resolves to the
 * resolved target and the number of bytes written. A regular file appears complete or not at all.
 */
export async function writeOutput(p: string, data: Uint8Array | AsyncIterable<Uint8Array>, opts: WriteOutputOptions = {}): Promise<{ out: OutputTarget; bytes: number }> {
  const out = resolveOutput(p)
  const known = data instanceof Uint8Array ? data.length : undefined
  const chunks: AsyncIterable<Uint8Array> =
    data instanceof Uint8Array
      ? (async function* () {
          yield data
        })()
      : data
  let bytes = 0
  if (out.kind === 'file') {
    if (known !== undefined) checkFreeSpace(path.dirname(out.target), known, out.target)
    const temp = partialName(out.target)
    trackPartial(temp)
    const open: { fh?: fs.promises.FileHandle; sync?: ProgressiveSync } = {}
    try {
      await replaceFile(
        out.target,
        async (t) => {
          const fh = (open.fh = await fs.promises.open(t, 'w'))
          if (out.mode !== undefined) await fh.chmod(out.mode)
          const sync = (open.sync = opts.durable ? new ProgressiveSync(fh) : undefined)
          for await (const c of chunks) {
            await writeAll(fh, c, null)
            bytes += c.length
            sync?.wrote(bytes)
          }
          await sync?.finish()
          open.fh = undefined
          await fh.close()
        },
        temp,
      )
      if (opts.durable) syncDirectory(path.dirname(out.target))
    } catch (err) {
      await open.sync?.settle()
      await open.fh?.close().catch(() => {})
      throw writeError(err, out.target)
    } finally {
      untrackPartial(temp)
    }
    return { out, bytes }
  }
  if (out.kind === 'block' && known !== undefined) checkDeviceSize(out, known)
  let fh: fs.promises.FileHandle | undefined
  try {
    fh = await openInPlace(out)
    for await (const c of chunks) {
      await writeAll(fh, c, out.kind === 'block' ? bytes : null)
      bytes += c.length
    }
    if (out.kind === 'block') await fh.datasync()
    await fh.close()
    fh = undefined
  } catch (err) {
    await fh?.close().catch(() => {})
    throw writeError(err, out.target)
  }
  return { out, bytes }
}
