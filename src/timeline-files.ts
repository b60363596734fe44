/**
 * A timeline whose regions come from files (what `ckpt add` does): open it, or create it with each
 * region sized by its file and a chunk size given or guessed from its name, and check that a chunk size
 * given for an existing region is the region's. Input files are read as SPEC.md ("CLI exit codes") says: a missing one
 * is CKPT_NOT_FOUND, a directory CKPT_BAD_ARGUMENT, an unreadable one CKPT_PERMISSION.
 */
import fs from 'node:fs'
import { CkptError, fsError, isCkptError } from '../codecs/errors.js'
import type { CkptStore } from './store.js'
import type { RegionConfig, Timeline } from './timeline.js'

/** A region of a timeline and the file that holds its content. */
export interface RegionFile {
  name: string
  file: string
  /** the region's chunk size (a power of two, 512 B to 1 MiB); default defaultChunkSize(name) */
  chunkSize?: number
}

export interface TimelineForFilesOptions {
  /** a retention policy to give the timeline (a policy spec); null removes the one it has */
  policy?: string | null
}

/** The default chunk size of a new region: 4 KiB pages for memory (names `ram*`, `mem*`), else 64 KiB clusters. */
export function defaultChunkSize(region: string): number {
  return /^(ram|mem)/i.test(region) ? 4096 : 65536
}

/**
 * The CkptError of an input file that cannot be read: CKPT_NOT_FOUND when it is missing, a directory
 * is CKPT_BAD_ARGUMENT, the rest as the system says (EACCES: CKPT_PERMISSION, ...).
 */
function inputError(err: unknown, file: string): CkptError {
  const code = (err as NodeJS.ErrnoException).code
  if (code === 'ENOENT' || code === 'ENOTDIR') return new CkptError('CKPT_NOT_FOUND', `cannot read ${file}: no such file`, { path: file, errno: code }, err)
  if (code === 'EISDIR') return new CkptError('CKPT_BAD_ARGUMENT', `cannot read ${file}: it is a directory`, { path: file, errno: code }, err)
  return fsError(err, `cannot read ${file}`, { path: file })
}

/** The size of an input file, which must be readable (it is opened: a permission shows now, not mid-checkpoint). */
export function inputFileSize(file: string): number {
  let fd: number | undefined
  try {
    // O_NONBLOCK: a FIFO given by mistake must not hang the open (regular files ignore the flag)
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
    const st = fs.fstatSync(fd)
    if (st.isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' })
    return st.size
  } catch (err) {
    throw inputError(err, file)
  } finally {
    if (fd !== undefined) fs.closeSync(fd)
  }
}

/** An input file's bytes (a blob's), with the errors of inputFileSize(). */
export function readInputFile(file: string): Uint8Array {
  try {
    return fs.readFileSync(file)
  } catch (err) {
    throw inputError(err, file)
  }
}

/**
 * Timeline `name` of the store, ready for `checkpoint({ regions: { NAME: { data: FILE } } })`. A
 * timeline that does not exist is created from `regions` (each sized by its file; CKPT_NOT_FOUND when
 * there are none); an existing one keeps its regions, and a chunk size given for one of them must be
 * its own (CKPT_TIMELINE_CONFIG). `opts.policy` gives the timeline a retention policy (null: none).
 */
export async function timelineForFiles(store: CkptStore, name: string, regions: readonly RegionFile[], opts: TimelineForFilesOptions = {}): Promise<Timeline> {
  let tl: Timeline
  try {
    tl = await store.timeline(name)
  } catch (err) {
    if (!isCkptError(err, 'CKPT_NOT_FOUND') || regions.length === 0) throw err
    const config: Record<string, RegionConfig> = {}
    for (const r of regions) config[r.name] = { size: inputFileSize(r.file), chunkSize: r.chunkSize ?? defaultChunkSize(r.name) }
    tl = await store.timeline(name, { regions: config })
  }
  if (opts.policy === null) {
    if (tl.policy !== undefined) await store.setPolicy(name, null)
  } else if (opts.policy !== undefined) await store.timeline(name, { policy: opts.policy })
  for (const r of regions) {
    const spec = tl.regions[r.name]
    if (spec && r.chunkSize !== undefined && r.chunkSize !== spec.chunkSize) {
      throw new CkptError('CKPT_TIMELINE_CONFIG', `region ${r.name} of timeline ${name} has chunk size ${spec.chunkSize}, not ${r.chunkSize}`, {
        timeline: name,
        region: r.name,
      })
    }
  }
  return tl
}
