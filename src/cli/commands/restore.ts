/** `ckpt restore`: a region or a blob of a checkpoint to a file or stdout, or all of them into a directory (src/restore-all.ts). */
import path from 'node:path'
import { parseArgs } from 'node:util'
import { CkptError, isCkptError } from '../../../codecs/errors.js'
import type { RestoreAllProgress } from '../../restore-all.js'
import { COMMON, QUIET, parse, required, storeDir } from '../args.js'
import { UsageError } from '../errors.js'
import { partialBytes, Progress } from '../progress.js'
import { json, JSON_HELP, line, oneRef, plural, QUIET_HELP, REF_HELP, STORE_HELP, withStore, writeStdout, type Command } from '../shared.js'

const OPTIONS = {
  ...COMMON,
  ...QUIET,
  region: { type: 'string' },
  blob: { type: 'string' },
  all: { type: 'boolean' },
  out: { type: 'string' },
  from: { type: 'string' },
  dirty: { type: 'string' },
  check: { type: 'boolean' },
} as const

const OPEN = { mustExist: true, readOnly: true }

/** whether the regions restored go to files, written on the worker threads (not stdout, not a restore by difference) */
function writesFiles(values: { out?: string; all?: boolean; region?: string; from?: string; dirty?: string; check?: boolean }): boolean {
  const travels = values.from !== undefined || values.dirty !== undefined || values.check === true
  return values.out !== undefined && values.out !== '-' && values.out !== '' && (values.all === true || (values.region !== undefined && !travels))
}

/**
 * `ckpt restore` to files, first thing (src/cli.ts calls it before loading anything else): starts the
 * worker threads that will write them while this thread loads the library and opens the store. Never
 * fails: run() parses the arguments and reports what is wrong.
 */
export async function startEarly(argv: string[]): Promise<void> {
  try {
    const { values } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: false })
    if (values.help || !writesFiles(values as Parameters<typeof writesFiles>[0])) return
    ;(await import('../../pipeline/prestart.js')).prestartWorkers()
  } catch {
    // run() says what is wrong
  }
}

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
  /** a restore by difference: the file holds this checkpoint's region (plus the dirty chunks) */
  travel?: { from?: string; dirty?: number[]; check?: boolean }
}

/** --dirty LIST: chunk indexes and ranges, "3,10-12" (a range's end included). */
export function parseChunkList(text: string): number[] {
  const out: number[] = []
  for (const part of text.split(',')) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part)
    if (!m) throw new UsageError(`--dirty takes chunk indexes and ranges like 3,10-12, not ${JSON.stringify(part)}`, 'restore')
    const a = Number(m[1])
    const b = m[2] === undefined ? a : Number(m[2])
    if (!Number.isSafeInteger(a) || !Number.isSafeInteger(b) || b < a || b - a > 1 << 26) throw new UsageError(`--dirty range ${part.trim()} is not a range of chunk indexes`, 'restore')
    for (let i = a; i <= b; i++) out.push(i)
  }
  return out
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
    if (what.travel) {
      const from = what.travel.from !== undefined ? (await store.resolve(what.travel.from)).toString() : undefined
      const t = await store.restore(cid, what.name, what.out, { ...what.travel, ...(from !== undefined ? { from } : {}) })
      return { ...head, target: what.out, size: spec.size, bytes: t.bytesWritten, chunks: t.chunksWritten, travel: { ...t, from } }
    }
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
       ckpt restore --store DIR REF --region NAME --out FILE --from REF2 [--dirty LIST] [--check] [--json]
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

With --from REF2, FILE already holds REF2's region (a file restored earlier, or a block device): it
is rewritten in place, only the chunks that differ between REF2 and REF, plus the chunks listed in
--dirty (written since), each verified. --check hashes every chunk of FILE instead of trusting it and
writes each one that is not REF's (with or without --from). In-place writes are not atomic: a
failure part-way leaves FILE holding a mix; run it again to finish.

${REF_HELP}

${STORE_HELP}
  --region NAME      the region to restore
  --blob NAME        the blob to extract
  --all              every region and blob, into the directory --out names
  --out FILE         where to write (- for stdout)
  --from REF2        FILE holds REF2's region: write only what differs (in place)
  --dirty LIST       with --from: chunks written to FILE since, e.g. 3,10-12
  --check            hash FILE's chunks and write every one that is not REF's
${QUIET_HELP}
${JSON_HELP} (not with --out -)

examples:
  ckpt restore --store s vm1@5000 --region ram --out ram.bin
  ckpt restore --store s vm1@5000 --all --out vm1-5000/
  ckpt restore --store s vm1 --blob cpu --out - | xxd | head
  ckpt restore --store s vm1@4000 --region ram --out ram.bin --from vm1@5000 --json`,
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
    // regions restored to files are written on the worker threads (the pool never writes a file from
    // the main thread): start them now, while this thread loads the library and opens the store
    if (writesFiles(values)) (await import('../../pipeline/prestart.js')).prestartWorkers()
    if (values.all) return restoreAllTo(dir, ref, out, values)
    const toStdout = out === '-'
    if (toStdout && values.json) throw new UsageError('--json cannot be used with --out - (stdout carries the data)', 'restore')
    const outPath = toStdout ? '-' : path.resolve(out)
    // a directory is refused before the store is opened
    if (!toStdout) (await import('../../output-file.js')).resolveOutput(outPath)
    const what: One = values.region !== undefined ? { kind: 'region', name: values.region, out: outPath } : { kind: 'blob', name: values.blob!, out: outPath }
    if (values.from !== undefined || values.dirty !== undefined || values.check) {
      if (what.kind !== 'region' || toStdout) throw new UsageError('--from, --dirty and --check rewrite a region\'s file in place: give --region and a file', 'restore')
      if (values.dirty !== undefined && values.from === undefined) throw new UsageError('--dirty lists chunks written since --from: give --from too', 'restore')
      what.travel = { ...(values.from !== undefined ? { from: values.from } : {}), ...(values.dirty !== undefined ? { dirty: parseChunkList(values.dirty) } : {}), ...(values.check ? { check: true } : {}) }
    }

    const progress = new Progress('ckpt restore', Progress.wanted(values))
    try {
      progress.set('opening the store')
      const r = await restoreOne(dir, ref, what, progress)
      progress.end()
      if (toStdout) return
      const other = r.target !== outPath
      const t = 'travel' in r ? r.travel : undefined
      if (t) {
        const from = t.from !== undefined ? { from: t.from } : {}
        if (values.json) {
          json({ cid: r.cid, timeline: r.timeline, vtime: r.vtime, region: r.name, out: outPath, ...from, mode: t.mode, size: r.size, bytesWritten: t.bytesWritten, chunksWritten: t.chunksWritten, holesWritten: t.holes, written: t.written, ...(t.mismatched !== undefined ? { mismatched: t.mismatched } : {}) })
        } else {
          const extra = t.mismatched !== undefined ? `; ${plural(t.mismatched, 'chunk')} of the file were not what it was said to hold` : ''
          line(`region ${r.name} of ${r.timeline}@${r.vtime} ${r.cid} -> ${outPath} (${t.mode}: ${plural(t.chunksWritten, 'chunk')} and ${plural(t.holes, 'hole')} written in ${plural(t.written.length, 'run')}${extra})`)
        }
        return
      }
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
