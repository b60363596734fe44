/**
 * A whole checkpoint into a directory (what `ckpt restore --all` does): every region and every blob
 * to DIR/NAME, by the output-file rules of src/output-file.ts (SPEC.md, "Output files"): a regular file appears
 * complete or not at all, a symlink's target is written, a device or FIFO in place. Names may hold
 * '/' (a file in a subdirectory, created), never a path outside DIR.
 */
import fs from 'node:fs'
import path from 'node:path'
import type { CID } from 'multiformats/cid'
import { CkptError, fsError } from '../codecs/errors.js'
import { writeOutput } from './output-file.js'
import type { CkptStore } from './store.js'

export interface RestoredFile {
  kind: 'region' | 'blob'
  name: string
  /** the file written: DIR/NAME (absolute) */
  out: string
  /** the region's or blob's size */
  size: number
  /** bytes written (a regular file's holes are not written) */
  bytesWritten: number
  chunksWritten: number
}

export interface RestoreAllResult {
  cid: CID
  timeline: string
  vtime: bigint
  /** DIR, absolute */
  out: string
  /** regions first, then blobs, each in the manifest's order */
  files: RestoredFile[]
}

export interface RestoreAllProgress {
  /** the file being written (called as it starts and as it ends) */
  file: { kind: 'region' | 'blob'; name: string; out: string; size: number }
  /** sizes of the files done so far (this one once it ends), and of all files */
  done: number
  total: number
}

export interface RestoreAllOptions {
  onProgress?: (p: RestoreAllProgress) => void
}

function mkdir(d: string): void {
  try {
    fs.mkdirSync(d, { recursive: true })
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'EEXIST' || code === 'ENOTDIR') {
      throw new CkptError('CKPT_BAD_ARGUMENT', `cannot create directory ${d}: a file of that name is in the way`, { path: d }, err)
    }
    throw fsError(err, `cannot create directory ${d}`, { path: d })
  }
}

/** DIR/NAME, its directory created; CKPT_BAD_ARGUMENT (details.reason 'outside') for a name that leaves DIR. */
function fileFor(dir: string, name: string): string {
  const file = path.resolve(dir, name)
  if (!file.startsWith(dir + path.sep)) {
    throw new CkptError('CKPT_BAD_ARGUMENT', `${name} does not name a file inside ${dir}: restore it on its own`, { name, path: dir, reason: 'outside' })
  }
  mkdir(path.dirname(file))
  return file
}

/**
 * Restores every region and blob of checkpoint `ref` into directory `dir` (created when missing), each
 * to DIR/NAME; every chunk is verified against its hash on the way. A name that is both a region and a
 * blob is CKPT_BAD_ARGUMENT (details.reason 'both') before anything is written.
 */
export async function restoreAll(store: CkptStore, ref: string | CID, dir: string, opts: RestoreAllOptions = {}): Promise<RestoreAllResult> {
  if (typeof dir !== 'string' || dir === '') throw new CkptError('CKPT_BAD_ARGUMENT', 'the directory to restore into must be a non-empty path', { path: dir })
  const cid = await store.resolve(ref)
  const m = await store.manifest(cid)
  const both = Object.keys(m.regions).filter((n) => n in m.blobs)
  if (both.length > 0) {
    throw new CkptError('CKPT_BAD_ARGUMENT', `${both[0]} is both a region and a blob of ${m.timeline}@${m.vtime}: restore them one at a time`, { name: both[0], reason: 'both' })
  }
  const out = path.resolve(dir)
  mkdir(out)
  const regions = Object.entries(m.regions).map(([name, r]) => ({ kind: 'region' as const, name, size: r.size }))
  const blobs = Object.entries(m.blobs).map(([name, b]) => ({ kind: 'blob' as const, name, size: b.size }))
  const total = [...regions, ...blobs].reduce((n, f) => n + f.size, 0)
  let done = 0
  // the regions at the same time: one region's reading of its tree and planning overlaps another's
  // reads and writes on the worker threads (each region's jobs are bounded as when alone)
  const restored = await Promise.allSettled(
    regions.map(async (f) => {
      const file = { ...f, out: fileFor(out, f.name) }
      opts.onProgress?.({ file, done, total })
      const r = await store.restore(cid, f.name, file.out)
      done += f.size
      opts.onProgress?.({ file, done, total })
      return { kind: 'region' as const, name: f.name, out: file.out, size: f.size, bytesWritten: r.bytesWritten, chunksWritten: r.chunksWritten }
    }),
  )
  const failed = restored.find((r) => r.status === 'rejected')
  if (failed) throw (failed as PromiseRejectedResult).reason
  const files: RestoredFile[] = restored.map((r) => (r as PromiseFulfilledResult<RestoredFile>).value)
  for (const f of blobs) {
    const file = { ...f, out: fileFor(out, f.name) }
    opts.onProgress?.({ file, done, total })
    const data = await store.readBlob(cid, f.name)
    await writeOutput(file.out, data)
    files.push({ kind: 'blob', name: f.name, out: file.out, size: data.length, bytesWritten: data.length, chunksWritten: m.blobs[f.name]!.chunks.length })
    done += f.size
    opts.onProgress?.({ file, done, total })
  }
  return { cid, timeline: m.timeline, vtime: m.vtime, out, files }
}
