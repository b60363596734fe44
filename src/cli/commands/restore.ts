/** `ckpt restore`: a region or a blob of a checkpoint to a file or stdout, or all of them into a directory (src/restore-all.ts). */
import path from 'node:path'
import { CkptError, isCkptError } from '../../../codecs/errors.js'
import type { RestoreAllProgress } from '../../restore-all.js'
import { COMMON, QUIET, parse, required, storeDir } from '../args.js'
import { UsageError } from '../errors.js'
import { partialBytes, Progress } from '../progress.js'
import { json, JSON_HELP, line, oneRef, plural, QUIET_HELP, REF_HELP, STORE_HELP, withStore, writeStdout, type Command } from '../shared.js'

const OPTIONS = { ...COMMON, ...QUIET, region: { type: 'string' }, blob: { type: 'string' }, all: { type: 'boolean' }, out: { type: 'string' } } as const

const OPEN = { mustExist: true, readOnly: true }

/** restoreAll's refusals of names as the usage errors they are here. */
function asUsage(err: unknown): never {
  if (isCkptError(err, 'CKPT_BAD_ARGUMENT') && err.details.reason === 'outside') {
    throw new UsageError(`${String(err.details.name)} does not name a file inside ${String(err.details.path)}: restore it with --region/--blob`, 'restore')
  }
  if (isCkptError(err, 'CKPT_BAD_ARGUMENT') && err.details.reason === 'both') throw new UsageError(err.message, 'restore')
  throw err
}

type OutputFiles = typeof import('../../output-file.js')

/**
 * What a restore has written so far, asked at each redraw of the progress line: a region going to a
 * regular file is written under its temporary name by the workers, whose allocated bytes tell.
 */
function measureFile(files: OutputFiles, out: string, size: number): (() => number) | undefined {
  try {
    const o = files.resolveOutput(out)
    if (o.kind !== 'file') return undefined
    const temp = files.partialName(o.target)
    return () => partialBytes(temp, size)
  } catch {
    return undefined
  }
}

/** `restore --all`: every region and blob of one checkpoint into a directory, in one process. */
async function restoreAllTo(dir: string, ref: string, out: string, opts: { json?: boolean; quiet?: boolean }): Promise<void> {
  if (out === '-') throw new UsageError('--all writes a directory: --out - is not possible', 'restore')
  const { restoreAll } = await import('../../restore-all.js')
  const files = await import('../../output-file.js')
  const progress = new Progress('ckpt restore', Progress.wanted(opts))
  const onProgress = (p: RestoreAllProgress) => {
    const m = p.file.kind === 'region' && progress.enabled ? measureFile(files, p.file.out, p.file.size) : undefined
    progress.amount(`restoring ${p.file.kind} ${p.file.name}`, p.done, p.total, 'B', m && (() => p.done + m()))
  }
  try {
    progress.set('opening the store')
    const r = await withStore(dir, OPEN, (store) => restoreAll(store, ref, out, { onProgress })).catch(asUsage)
    progress.end()
    const cid = r.cid.toString()
    if (opts.json) json({ cid, timeline: r.timeline, vtime: r.vtime, out: r.out, files: r.files })
    else for (const f of r.files) line(`${f.kind} ${f.name} of ${r.timeline}@${r.vtime} ${cid} -> ${f.out} (${f.size} B, ${plural(f.chunksWritten, 'chunk')} written)`)
  } finally {
    progress.end()
  }
}

interface One {
  kind: 'region' | 'blob'
  name: string
  /** '-' for stdout, else absolute */
  out: string
}

/** A region or blob of a checkpoint to `what.out`; resolves to what the output line says. */
async function restoreOne(dir: string, ref: string, what: One, progress: Progress) {
  const files = await import('../../output-file.js')
  const toStdout = what.out === '-'
  return withStore(dir, OPEN, async (store) => {
    const cid = (await store.resolve(ref)).toString()
    const m = await store.manifest(cid)
    const phase = `restoring ${what.kind} ${what.name} of ${m.timeline}@${m.vtime}`
    const head = { cid, timeline: m.timeline, vtime: m.vtime, kind: what.kind, name: what.name }
    if (what.kind === 'blob') {
      progress.set(phase)
      const data = await store.readBlob(cid, what.name)
      progress.amount(phase, 0, data.length)
      const target = toStdout ? '-' : (await files.writeOutput(what.out, data)).out.target
      if (toStdout) await writeStdout(data)
      return { ...head, target, size: data.length, bytes: data.length, chunks: m.blobs[what.name]!.chunks.length }
    }
    const spec = m.regions[what.name]
    if (!spec) throw new CkptError('CKPT_UNKNOWN_REGION', `checkpoint has no region ${what.name}`, { region: what.name })
    progress.amount(phase, 0, spec.size, 'B', toStdout || !progress.enabled ? undefined : measureFile(files, what.out, spec.size))
    let res: { bytesWritten: number; chunksWritten: number }
    if (toStdout) {
      // stdout: front to back, holes as zeros, no buffer or temporary file
      const { restoreTo } = await import('../../restore.js')
      let sent = 0
      const write = (b: Uint8Array) => ((sent += b.length), progress.amount(phase, sent, spec.size), writeStdout(b))
      res = await restoreTo(store, cid, what.name, { write })
    } else res = await store.restore(cid, what.name, what.out)
    return { ...head, target: toStdout ? '-' : files.resolveOutput(what.out).target, size: spec.size, bytes: res.bytesWritten, chunks: res.chunksWritten }
  })
}

export const restore: Command = {
  summary: 'write a region (or a blob) of a checkpoint to a file',
  help: `usage: ckpt restore --store DIR REF --region NAME --out FILE [--quiet] [--json]
       ckpt restore --store DIR REF --blob NAME --out FILE [--quiet] [--json]
       ckpt restore --store DIR REF --all --out DIR [--quiet] [--json]

Writes the region (a sparse file: all-zero chunks become holes) or the blob of the checkpoint to FILE,
or to stdout with --out -. With --all, every region and every blob of the checkpoint goes to
DIR/NAME (DIR is created; a name both a region and a blob carry is a usage error). Every chunk is
verified against its hash on the way. On a terminal, a progress bar on stderr.

FILE is written under FILE.ckpt-partial-PID and renamed over FILE when complete (a failure or a
signal leaves no partial file), after checking that the file system has room for the data. A
symlink is followed and its target written so (the link stays); a block device is written in place
(holes as zeros); a FIFO or character device (/dev/null) front to back; a directory is refused.

${REF_HELP}

${STORE_HELP}
  --region NAME      the region to restore
  --blob NAME        the blob to extract
  --all              every region and blob, into the directory --out names
  --out FILE         where to write (- for stdout)
${QUIET_HELP}
${JSON_HELP} (not with --out -)

examples:
  ckpt restore --store s vm1@5000 --region ram --out ram.bin
  ckpt restore --store s vm1@5000 --all --out vm1-5000/
  ckpt restore --store s vm1 --blob cpu --out - | xxd | head`,
  options: OPTIONS,
  json: 'document',
  async run(argv) {
    const { values, positionals } = parse('restore', argv, OPTIONS)
    const ref = oneRef('restore', positionals)
    const dir = storeDir(values.store, 'restore')
    const picked = [values.region !== undefined, values.blob !== undefined, values.all === true].filter(Boolean).length
    if (picked !== 1) throw new UsageError('give one of --region NAME, --blob NAME or --all', 'restore')
    const out = required(values.out, '--out', 'restore')
    if (out === '') throw new UsageError('--out must not be empty', 'restore')
    if (values.all) return restoreAllTo(dir, ref, out, values)
    const toStdout = out === '-'
    if (toStdout && values.json) throw new UsageError('--json cannot be used with --out - (stdout carries the data)', 'restore')
    const outPath = toStdout ? '-' : path.resolve(out)
    // a directory is refused before the store is opened
    if (!toStdout) (await import('../../output-file.js')).resolveOutput(outPath)
    const what: One = values.region !== undefined ? { kind: 'region', name: values.region, out: outPath } : { kind: 'blob', name: values.blob!, out: outPath }

    const progress = new Progress('ckpt restore', Progress.wanted(values))
    try {
      progress.set('opening the store')
      const r = await restoreOne(dir, ref, what, progress)
      progress.end()
      if (toStdout) return
      const other = r.target !== outPath
      if (values.json) {
        json({ cid: r.cid, timeline: r.timeline, vtime: r.vtime, [r.kind]: r.name, out: outPath, ...(other ? { target: r.target } : {}), size: r.size, bytesWritten: r.bytes, chunksWritten: r.chunks })
      } else {
        line(`${r.kind} ${r.name} of ${r.timeline}@${r.vtime} ${r.cid} -> ${outPath}${other ? ` (-> ${r.target})` : ''} (${r.size} B, ${plural(r.chunks, 'chunk')} written)`)
      }
    } finally {
      progress.end()
    }
  },
}
