/** `ckpt add`: a checkpoint of region files (and blobs) on a timeline (src/timeline-files.ts). */
import fs from 'node:fs'
import { parseArgs } from 'node:util'
import type { RegionInput } from '../../timeline.js'
import { COMMON, QUIET, parse, parsePair, parseRegionArg, parseVtime, required, storeDir, type RegionArg } from '../args.js'
import { UsageError } from '../errors.js'
import { humanBytes } from '../format.js'
import { Progress } from '../progress.js'
import { checkPolicy, json, JSON_HELP, line, note, QUIET_HELP, STORE_HELP, withStore, type Command } from '../shared.js'

/** Input at least this large starts the worker threads before the store is opened. */
const PRESTART_BYTES = 64 << 20

const OPTIONS = {
  ...COMMON,
  ...QUIET,
  timeline: { type: 'string' },
  vtime: { type: 'string' },
  label: { type: 'string' },
  meta: { type: 'string', multiple: true },
  blob: { type: 'string', multiple: true },
  policy: { type: 'string' },
  'no-scan-cache': { type: 'boolean' },
} as const

/**
 * `ckpt add` of big files, first thing (src/cli.ts calls it before loading anything else): when the
 * arguments name ≥ PRESTART_BYTES of region files, starts the worker threads and has them hash the
 * files' spans (prescanFiles) while this thread loads the library and opens the store. A light
 * look at the arguments that never fails: whatever it cannot make out, run() parses and reports.
 */
export async function startEarly(argv: string[]): Promise<void> {
  let files: string[]
  let total = 0
  try {
    const { values, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: false })
    if (values.help) return
    files = positionals.map((p) => parseRegionArg(p, 'add').file)
    for (const f of files) total += fs.statSync(f).size
    if (total < PRESTART_BYTES) return
    const { prestartWorkers, prescanFiles } = await import('../../pipeline/prestart.js')
    prestartWorkers()
    if (values['no-scan-cache'] !== true) prescanFiles(files)
  } catch {
    // run() says what is wrong
  }
}

/** The REGION=FILE arguments, each region once. */
function regionArgs(positionals: string[]): RegionArg[] {
  const regions = positionals.map((p) => parseRegionArg(p, 'add'))
  const seen = new Set<string>()
  for (const r of regions) {
    if (seen.has(r.name)) throw new UsageError(`region ${r.name} is given twice`, 'add')
    seen.add(r.name)
  }
  return regions
}

/** --meta KEY=VALUE entries, then --label. */
function metaArgs(entries: string[] | undefined, label: string | undefined): Record<string, string> {
  const meta: Record<string, string> = {}
  for (const m of entries ?? []) {
    const [k, v] = parsePair(m, '--meta', 'add')
    meta[k] = v
  }
  if (label !== undefined) meta.label = label
  return meta
}

/** --blob NAME=FILE entries, each file read now. */
function blobArgs(entries: string[] | undefined, read: (file: string) => Uint8Array): Record<string, Uint8Array> {
  const blobs: Record<string, Uint8Array> = {}
  for (const b of entries ?? []) {
    const [k, file] = parsePair(b, '--blob', 'add')
    if (k in blobs) throw new UsageError(`blob ${k} is given twice`, 'add')
    blobs[k] = read(file)
  }
  return blobs
}

export const add: Command = {
  summary: 'add a checkpoint of region files (and blobs) to a timeline',
  help: `usage: ckpt add --store DIR --timeline NAME --vtime N [--label TEXT] [--meta KEY=VALUE]...
                [--blob NAME=FILE]... [--policy SPEC] [--no-scan-cache] [--quiet] [--json]
                REGION=FILE[:CHUNKSIZE]...

Checkpoints the given files as the timeline's regions at virtual time N (which must be after the
timeline's last checkpoint). Files are scanned whole; unchanged and all-zero chunks cost nothing.
A region of pages is scanned by 64 KiB spans against the scan cache of its last full scan (a file
under DIR/scan, checksummed with a key kept in the index): --no-scan-cache hashes every chunk and
writes the cache anew.

The first add to a timeline creates it: each REGION gets the size of its FILE and the chunk size
CHUNKSIZE (4096, 4k, 64K, 1M; default 4k for regions named ram*/mem*, else 64k). Later adds use the
timeline's regions: each FILE must have its region's size; regions not given keep their content.

${STORE_HELP}
  --timeline NAME    the timeline (created on first use)
  --vtime N          virtual time of the checkpoint, an integer in [0, 2^64)
  --label TEXT       stored in the checkpoint's meta as "label" (wins over --meta label=...)
  --meta KEY=VALUE   a meta entry (repeatable)
  --blob NAME=FILE   store FILE as blob NAME, e.g. device or CPU state (repeatable)
  --policy SPEC      give the timeline this retention policy (see ckpt thin --help), applied now and
                     after every later checkpoint; "none" removes it
  --no-scan-cache    do not trust the scan cache: hash every chunk (and write the cache anew)
${QUIET_HELP}
${JSON_HELP}

Prints the checkpoint's CID; with --json {cid, timeline, vtime, stats}.

examples:
  ckpt add --store s --timeline vm1 --vtime 0 --label boot ram=ram.bin disk=disk.img:64k --blob cpu=cpu.bin
  ckpt add --store s --timeline vm1 --vtime 1000000 ram=ram.bin disk=disk.img --blob cpu=cpu.bin`,
  options: OPTIONS,
  json: 'document',
  async run(argv) {
    const { values, positionals } = parse('add', argv, OPTIONS)
    const dir = storeDir(values.store, 'add')
    const policy = values.policy === undefined ? undefined : await checkPolicy(values.policy, 'add')
    const name = required(values.timeline, '--timeline', 'add')
    const vtime = parseVtime(required(values.vtime, '--vtime', 'add'), '--vtime', 'add')
    const regions = regionArgs(positionals)
    if (regions.length === 0 && (values.blob ?? []).length === 0) throw new UsageError('give at least one REGION=FILE or --blob NAME=FILE', 'add')
    const meta = metaArgs(values.meta, values.label)
    const { inputFileSize, readInputFile, timelineForFiles } = await import('../../timeline-files.js')
    const blobs = blobArgs(values.blob, readInputFile)
    // sizes before the store is opened (or created): a missing file stops here
    const total = regions.reduce((n, r) => n + inputFileSize(r.file), 0)
    // a big scan will want the worker threads: start them now, while this thread loads the library
    // and opens the store (a small add hashes on this thread and never starts them)
    // and, unless the scan cache is off, have them hash the files' spans meanwhile (prescanFiles)
    if (total >= PRESTART_BYTES) {
      const { prestartWorkers, prescanFiles } = await import('../../pipeline/prestart.js')
      prestartWorkers()
      if (values['no-scan-cache'] !== true) prescanFiles(regions.map((r) => r.file))
    }

    const progress = new Progress('ckpt add', Progress.wanted(values))
    try {
      progress.set('opening the store')
      const cp = await withStore(dir, {}, async (store) => {
        const tl = await timelineForFiles(store, name, regions, policy === undefined ? {} : { policy })
        const input: Record<string, RegionInput> = {}
        for (const r of regions) input[r.name] = { data: r.file }
        progress.set(`checkpointing ${name}@${vtime} (${humanBytes(total)})`)
        const result = await tl.checkpoint({ vtime, regions: input, blobs, meta, scanCache: values['no-scan-cache'] !== true })
        progress.set('closing the store')
        return result
      })
      progress.end()
      if (values.json) json({ cid: cp.cid.toString(), timeline: cp.timeline, vtime: cp.vtime, stats: cp.stats })
      else {
        line(cp.cid.toString())
        if (cp.stats.thinned) note(`ckpt add: the timeline's policy dropped ${cp.stats.thinned} older checkpoint${cp.stats.thinned === 1 ? '' : 's'} (ckpt gc reclaims their blocks)`)
      }
    } finally {
      progress.end()
    }
  },
}
