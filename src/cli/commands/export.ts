/** `ckpt export`: checkpoints to a bundle (a CAR file) or stdout. */
import path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { CheckpointManifest as Manifest } from '../../store.js'
import type { CkptStore } from '../../store.js'
import type { ExportOptions } from '../../bundle.js'
import { COMMON, QUIET, parse, required, storeDir } from '../args.js'
import { UsageError } from '../errors.js'
import { columns, humanBytes } from '../format.js'
import { Progress } from '../progress.js'
import { json, JSON_HELP, line, plural, QUIET_HELP, REF_HELP, STORE_HELP, withStore, type Command } from '../shared.js'

const OPTIONS = {
  ...COMMON,
  ...QUIET,
  out: { type: 'string' },
  since: { type: 'string', multiple: true },
  compress: { type: 'boolean' },
  'compress-with': { type: 'string' },
} as const

function logicalBytes(m: Manifest): number {
  return Object.values(m.regions).reduce((n, r) => n + r.size, 0) + Object.values(m.blobs).reduce((n, b) => n + b.size, 0)
}

/** The bytes of what changed from checkpoint a to b (store.diff: unchanged subtrees are skipped). */
async function changedBytes(store: CkptStore, a: string, b: string): Promise<number> {
  const m = await store.manifest(b)
  let n = 0
  for await (const e of store.diff(a, b)) {
    if (e.kind === 'chunks') n += (e.end - e.start) * e.chunkSize
    else if (e.kind === 'region-added' || e.kind === 'region-resized') n += m.regions[e.region]!.size
    else if (e.kind === 'blob-added' || e.kind === 'blob-changed') n += m.blobs[e.blob]!.size
  }
  return n
}

/**
 * The progress bar's total: about the block bytes the bundle carries — the first checkpoint whole (or
 * what changed since the last --since), then what each next one changed from the one before. Holes
 * and blocks shared between regions are counted, so it may exceed the bytes exported (the bar then
 * ends by a jump); undefined when it cannot be worked out (export says why).
 */
async function estimate(store: CkptStore, refs: string[], since: string[]): Promise<number | undefined> {
  try {
    let prev = since.at(-1)
    let total = 0
    for (const r of refs) {
      total += prev === undefined ? logicalBytes(await store.manifest(r)) : await changedBytes(store, prev, r)
      prev = r
    }
    return total
  } catch {
    return undefined
  }
}

interface Exported {
  roots: string[]
  blocks: number
  bytes: number
  skipped: number
  carBytes: number
  fileBytes: number
  compression: string
  target: string
}

function report(out: string, s: Exported, asJson: boolean): void {
  const other = s.target !== out
  if (asJson) {
    json({ out, ...(other ? { target: s.target } : {}), checkpoints: s.roots.length, roots: s.roots, blocks: s.blocks, bytes: s.bytes, skipped: s.skipped, carBytes: s.carBytes, fileBytes: s.fileBytes, compression: s.compression })
    return
  }
  line(`exported ${plural(s.roots.length, 'checkpoint')} to ${out}${other ? ` (-> ${s.target})` : ''}`)
  for (const l of columns([
    ['blocks', `${s.blocks} (${humanBytes(s.bytes)})${s.skipped ? `, ${s.skipped} left out (already sent or in --since)` : ''}`],
    ['file', `${humanBytes(s.fileBytes)}${s.compression === 'none' ? '' : ` (${s.compression}; ${humanBytes(s.carBytes)} uncompressed)`}`],
  ]))
    line('  ' + l)
}

export const exportCmd: Command = {
  summary: 'write checkpoints to a bundle (a CAR file any IPFS tool reads)',
  help: `usage: ckpt export --store DIR REF... --out FILE [--since REF]... [--compress [--compress-with zstd|gzip]]
                   [--quiet] [--json]

Writes the checkpoints and every block they reach, once each, as a CAR v1 file whose roots are the
checkpoints. With --since, blocks reachable from those checkpoints (which the receiver already has)
are left out: a thin bundle. --out - writes to stdout, e.g. to pipe into "ckpt import -" on another
machine. --compress compresses the whole file (zstd where it is available, else gzip); import
recognises it by itself. Every block is verified against its hash as it is read. On a terminal, a
progress bar on stderr (its total is estimated from the checkpoints' sizes and differences).

${REF_HELP}

${STORE_HELP}
  --out FILE           the bundle (- for stdout); written under a temporary name, synced to the
                       disk and renamed when complete (a symlink's target so; a FIFO or device
                       written in place)
  --since REF          a checkpoint the receiver has (repeatable)
  --compress           compress the bundle file
  --compress-with C    zstd or gzip (implies --compress)
${QUIET_HELP}
${JSON_HELP} (not with --out -)

examples:
  ckpt export --store s run-42 --out run-42.car
  ckpt export --store s run-42@0 run-42@5000000 --out two.car --compress
  ckpt export --store s run-42 --since run-42@1000 --out - | ssh lab ckpt import --store /data/ckpt -`,
  options: OPTIONS,
  json: 'document',
  async run(argv) {
    const { values, positionals } = parse('export', argv, OPTIONS)
    if (positionals.length === 0) throw new UsageError('missing REF (the checkpoints to export)', 'export')
    const dir = storeDir(values.store, 'export')
    const out = required(values.out, '--out', 'export')
    if (out === '') throw new UsageError('--out must not be empty', 'export')
    const toStdout = out === '-'
    if (toStdout && values.json) throw new UsageError('--json cannot be used with --out - (stdout carries the bundle)', 'export')
    const how = values['compress-with']
    if (how !== undefined && how !== 'zstd' && how !== 'gzip') throw new UsageError(`--compress-with must be zstd or gzip, not ${JSON.stringify(how)}`, 'export')
    const compress = how ?? (values.compress ? true : false)
    const outPath = toStdout ? '-' : path.resolve(out)
    // a directory is refused before the store is opened
    const files = await import('../../output-file.js')
    if (!toStdout) files.resolveOutput(outPath)
    const since = values.since ?? []
    const progress = new Progress('ckpt export', Progress.wanted(values))
    try {
      const summary = await withStore(dir, { mustExist: true, readOnly: true }, async (store): Promise<Exported> => {
        const { exportBundle, exportBundleToFile } = await import('../../bundle.js')
        progress.set('resolving checkpoints')
        const total = progress.enabled ? await estimate(store, positionals, since) : undefined
        const opts: ExportOptions = {
          since,
          compress,
          onProgress: (p) => {
            const t = (p as { total?: number }).total ?? total
            progress.amount(`${p.blocks} blocks`, p.bytes, t === undefined ? undefined : Math.max(t, p.bytes + 1))
          },
        }
        if (toStdout) {
          const stream = exportBundle(store, positionals, opts)
          await pipeline(Readable.from(stream), process.stdout, { end: false })
          const sum = await stream.summary
          return { ...sum, fileBytes: sum.carBytes, target: '-' }
        }
        return exportBundleToFile(store, positionals, outPath, opts)
      })
      progress.end()
      if (!toStdout) report(outPath, summary, values.json === true)
    } finally {
      progress.end()
    }
  },
}
