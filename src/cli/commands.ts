/**
 * The commands of `ckpt`: each parses its arguments, makes one library call (a few for the summaries
 * of `stats` and `log`) and prints text, or JSON with --json.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { CkptError, fsError, isCkptError } from '../../codecs/errors.js'
import type { CkptStore, OpenOptions } from '../store.js'
import type { RegionConfig, RegionInput, Timeline } from '../timeline.js'
import { COMMON, defaultChunkSize, parse, parsePair, parseRegionArg, parseVtime, required, storeDir } from './args.js'
import { EXIT, StoreOpenError, UsageError, type ExitCode } from './errors.js'
import { columns, diffText, esc, humanBytes, manifestJson, manifestText, toJson } from './format.js'
import { Progress } from './progress.js'

export interface Command {
  summary: string
  help: string
  /** resolves to the exit status when it is not 0 without an error (verify: problems found) */
  run(argv: string[]): Promise<void | ExitCode>
}

// ---------------------------------------------------------------- output

/** One line of text output, escaped (esc(): no control characters of names or meta values reach the terminal). */
function line(text: string): void {
  process.stdout.write(esc(text) + '\n')
}

/** A note on stderr, escaped like line(). */
function note(text: string): void {
  process.stderr.write(esc(text) + '\n')
}

/** One JSON value on a line (JSON.stringify escapes control characters itself). */
function json(value: unknown): void {
  process.stdout.write(toJson(value) + '\n')
}

/** Writes binary data to stdout and waits until it has been handed to the OS. */
function writeStdout(data: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => process.stdout.write(data, (err) => (err ? reject(err) : resolve())))
}

// ---------------------------------------------------------------- the store

/**
 * Opens the store, runs fn, always closes (releasing the LevelDB lock). Errors of the open itself are
 * StoreOpenErrors (exit 3). Commands that only read pass `mustExist` so a typo never creates a store.
 */
async function withStore<T>(dir: string, opts: OpenOptions, fn: (store: CkptStore) => Promise<T>): Promise<T> {
  // loaded here, not at startup: --help and usage errors need none of the library's dependencies
  const { openStore } = await import('../store.js')
  let store: CkptStore
  try {
    // one command is a short-lived process: filling the dedup filter would read every block entry of
    // the index at each start (O(store)); without it a "stored already?" is one index lookup. import,
    // which asks that of every block of a bundle, opts back in
    store = await openStore(dir, { dedupFilter: false, ...opts })
  } catch (err) {
    if (isCkptError(err)) throw new StoreOpenError(err)
    throw err
  }
  // what the open found and did (an index rebuilt from the packs, a read from the packs alone)
  for (const n of store.openNotes) note(`ckpt: note: ${n.message}`)
  let ok = false
  try {
    const r = await fn(store)
    ok = true
    return r
  } finally {
    try {
      await store.close()
    } catch (err) {
      // a failure to close matters only when nothing failed before it
      if (ok) throw err
    }
  }
}

/**
 * Read-only commands: never create a store, never write to one (an index that cannot be used is
 * replaced by one built in memory from the packs); no worker threads for a few small reads.
 */
const READ: OpenOptions = { mustExist: true, threads: 0, readOnly: true }

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

/** The size of an input file, which must be readable (opened here: a permission shows now, not mid-checkpoint). */
function fileSize(file: string): number {
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

function readInput(file: string): Uint8Array {
  try {
    return fs.readFileSync(file)
  } catch (err) {
    throw inputError(err, file)
  }
}

const STORE_HELP = `  --store DIR        the store (default: $CKPT_STORE)`
const JSON_HELP = `  --json             machine-readable output (errors too: {"error":{"code","message"}})`
const REF_HELP = `REF is a checkpoint CID, TIMELINE@VTIME (the nearest checkpoint at or before VTIME), TIMELINE
(its latest checkpoint) or ref:NAME (a ref set by ckpt ref).`

// ---------------------------------------------------------------- init

const init: Command = {
  summary: 'create a store',
  help: `usage: ckpt init --store DIR [--json]

Creates an empty store in DIR (which must be missing or empty); an existing store is left as it is.
Prints the store's absolute path.

${STORE_HELP}
${JSON_HELP}

examples:
  ckpt init --store ./ckpt-store
  CKPT_STORE=/var/lib/ckpt ckpt init`,
  async run(argv) {
    const { values, positionals } = parse('init', argv, COMMON)
    noPositionals('init', positionals)
    const dir = storeDir(values.store, 'init')
    await withStore(dir, { threads: 0 }, async () => undefined)
    if (values.json) json({ store: dir })
    else line(dir)
  },
}

function noPositionals(command: string, positionals: string[]): void {
  if (positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`, command)
}

// ---------------------------------------------------------------- add

const add: Command = {
  summary: 'add a checkpoint of region files (and blobs) to a timeline',
  help: `usage: ckpt add --store DIR --timeline NAME --vtime N [--label TEXT] [--meta KEY=VALUE]...
                [--blob NAME=FILE]... [--policy SPEC] [--no-scan-cache] [--json] REGION=FILE[:CHUNKSIZE]...

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
${JSON_HELP}

Prints the checkpoint's CID; with --json {cid, timeline, vtime, stats}.

examples:
  ckpt add --store s --timeline vm1 --vtime 0 --label boot ram=ram.bin disk=disk.img:64k --blob cpu=cpu.bin
  ckpt add --store s --timeline vm1 --vtime 1000000 ram=ram.bin disk=disk.img --blob cpu=cpu.bin`,
  async run(argv) {
    const { values, positionals } = parse('add', argv, {
      ...COMMON,
      timeline: { type: 'string' },
      vtime: { type: 'string' },
      label: { type: 'string' },
      meta: { type: 'string', multiple: true },
      blob: { type: 'string', multiple: true },
      policy: { type: 'string' },
      'no-scan-cache': { type: 'boolean' },
    })
    const dir = storeDir(values.store, 'add')
    const policy = values.policy === undefined ? undefined : await checkPolicy(values.policy, 'add')
    const name = required(values.timeline, '--timeline', 'add')
    const vtime = parseVtime(required(values.vtime, '--vtime', 'add'), '--vtime', 'add')
    const regionArgs = positionals.map((p) => parseRegionArg(p, 'add'))
    if (regionArgs.length === 0 && (values.blob ?? []).length === 0) throw new UsageError('give at least one REGION=FILE or --blob NAME=FILE', 'add')
    const seen = new Set<string>()
    for (const r of regionArgs) {
      if (seen.has(r.name)) throw new UsageError(`region ${r.name} is given twice`, 'add')
      seen.add(r.name)
    }
    const meta: Record<string, string> = {}
    for (const m of values.meta ?? []) {
      const [k, v] = parsePair(m, '--meta', 'add')
      meta[k] = v
    }
    if (values.label !== undefined) meta.label = values.label
    const blobs: Record<string, Uint8Array> = {}
    for (const b of values.blob ?? []) {
      const [k, file] = parsePair(b, '--blob', 'add')
      if (k in blobs) throw new UsageError(`blob ${k} is given twice`, 'add')
      blobs[k] = readInput(file)
    }
    // sizes before the store is opened (or created): a missing file stops here
    const sizes = new Map(regionArgs.map((r) => [r.name, fileSize(r.file)]))

    const progress = new Progress('ckpt add', Progress.wanted(values.json === true))
    try {
      progress.set('opening the store')
      const cp = await withStore(dir, {}, async (store) => {
        let tl: Timeline
        try {
          tl = await store.timeline(name)
        } catch (err) {
          if (!isCkptError(err, 'CKPT_NOT_FOUND') || regionArgs.length === 0) throw err
          const regions: Record<string, RegionConfig> = {}
          for (const r of regionArgs) regions[r.name] = { size: sizes.get(r.name)!, chunkSize: r.chunkSize ?? defaultChunkSize(r.name) }
          tl = await store.timeline(name, { regions })
        }
        if (policy === null) {
          if (tl.policy !== undefined) await store.setPolicy(name, null)
        } else if (policy !== undefined) await store.timeline(name, { policy })
        for (const r of regionArgs) {
          const spec = tl.regions[r.name]
          if (spec && r.chunkSize !== undefined && r.chunkSize !== spec.chunkSize) {
            throw new CkptError('CKPT_TIMELINE_CONFIG', `region ${r.name} of timeline ${name} has chunk size ${spec.chunkSize}, not ${r.chunkSize}`, {
              timeline: name,
              region: r.name,
            })
          }
        }
        const regions: Record<string, RegionInput> = {}
        for (const r of regionArgs) regions[r.name] = { data: r.file }
        const total = [...sizes.values()].reduce((a, b) => a + b, 0)
        progress.set(`checkpointing ${name}@${vtime} (${humanBytes(total)})`)
        const result = await tl.checkpoint({ vtime, regions, blobs, meta, scanCache: values['no-scan-cache'] !== true })
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

// ---------------------------------------------------------------- log

const log: Command = {
  summary: 'list checkpoints, oldest first',
  help: `usage: ckpt log --store DIR [--timeline NAME] [--json]

Lists the checkpoints of one timeline (or of all, timeline by timeline), oldest first, one per line:
TIMELINE@VTIME CID [LABEL]. With --json one object per line: {timeline, vtime, cid, wall, meta}.

${STORE_HELP}
  --timeline NAME    only this timeline
${JSON_HELP}

examples:
  ckpt log --store s
  ckpt log --store s --timeline vm1 --json`,
  async run(argv) {
    const { values, positionals } = parse('log', argv, { ...COMMON, timeline: { type: 'string' } })
    noPositionals('log', positionals)
    const dir = storeDir(values.store, 'log')
    await withStore(dir, READ, async (store) => {
      for await (const e of store.log(values.timeline)) {
        const m = await store.manifest(e.cid)
        if (values.json) json({ timeline: e.timeline, vtime: e.vtime, cid: e.cid.toString(), wall: new Date(m.wall).toISOString(), meta: m.meta })
        else line(`${e.timeline}@${e.vtime} ${e.cid.toString()}${m.meta.label !== undefined ? ' ' + m.meta.label : ''}`)
      }
    })
  },
}

// ---------------------------------------------------------------- show

const show: Command = {
  summary: "print a checkpoint's manifest",
  help: `usage: ckpt show --store DIR REF [--json]

Prints the checkpoint's manifest: CID, timeline, vtime, wall-clock time (ISO 8601), parent, meta,
regions (size, chunk size, root CID or "(all zero)") and blobs (size, chunk count).

${REF_HELP}

${STORE_HELP}
${JSON_HELP}

examples:
  ckpt show --store s vm1
  ckpt show --store s vm1@5000 --json
  ckpt show --store s bafyrei...`,
  async run(argv) {
    const { values, positionals } = parse('show', argv, COMMON)
    const ref = oneRef('show', positionals)
    const dir = storeDir(values.store, 'show')
    await withStore(dir, READ, async (store) => {
      const cid = (await store.resolve(ref)).toString()
      const m = await store.manifest(cid)
      if (values.json) json(manifestJson(cid, m))
      else for (const l of manifestText(cid, m)) line(l)
    })
  },
}

function oneRef(command: string, positionals: string[]): string {
  if (positionals.length === 0) throw new UsageError('missing REF', command)
  if (positionals.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[1])}`, command)
  return positionals[0]!
}

// ---------------------------------------------------------------- seek

const seek: Command = {
  summary: 'find the nearest checkpoint at or before a vtime',
  help: `usage: ckpt seek --store DIR --timeline NAME --vtime N [--json]

Prints TIMELINE@VTIME CID of the timeline's nearest checkpoint at or before N; with --json
{timeline, vtime, cid}. Exits 1 (CKPT_NOT_FOUND) when there is none.

${STORE_HELP}
  --timeline NAME    the timeline
  --vtime N          virtual time, an integer in [0, 2^64)
${JSON_HELP}

examples:
  ckpt seek --store s --timeline vm1 --vtime 123456`,
  async run(argv) {
    const { values, positionals } = parse('seek', argv, { ...COMMON, timeline: { type: 'string' }, vtime: { type: 'string' } })
    noPositionals('seek', positionals)
    const dir = storeDir(values.store, 'seek')
    const name = required(values.timeline, '--timeline', 'seek')
    const vtime = parseVtime(required(values.vtime, '--vtime', 'seek'), '--vtime', 'seek')
    await withStore(dir, READ, async (store) => {
      const e = await store.seek(name, vtime)
      if (!e) throw new CkptError('CKPT_NOT_FOUND', `timeline ${name} has no checkpoint at or before ${vtime}`, { timeline: name, vtime: vtime.toString() })
      if (values.json) json({ timeline: e.timeline, vtime: e.vtime, cid: e.cid.toString() })
      else line(`${e.timeline}@${e.vtime} ${e.cid.toString()}`)
    })
  },
}

// ---------------------------------------------------------------- restore

/** `restore --all`: every region and blob of one checkpoint into a directory, in one process. */
async function restoreAll(dir: string, ref: string, out: string, asJson: boolean): Promise<void> {
  if (out === '-') throw new UsageError('--all writes a directory: --out - is not possible', 'restore')
  const { writeOutput } = await import('../output-file.js')
  const outDir = path.resolve(out)
  const progress = new Progress('ckpt restore', Progress.wanted(asJson))
  try {
    progress.set('opening the store')
    const r = await withStore(dir, { mustExist: true, readOnly: true }, async (store) => {
      const cid = (await store.resolve(ref)).toString()
      const m = await store.manifest(cid)
      const both = Object.keys(m.regions).filter((n) => n in m.blobs)
      if (both.length > 0) throw new UsageError(`${both[0]} is both a region and a blob of ${m.timeline}@${m.vtime}: restore them one at a time`, 'restore')
      const mkdir = (d: string) => {
        try {
          fs.mkdirSync(d, { recursive: true })
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EEXIST' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') {
            throw new CkptError('CKPT_BAD_ARGUMENT', `cannot create directory ${d}: a file of that name is in the way`, { path: d }, err)
          }
          throw fsError(err, `cannot create directory ${d}`, { path: d })
        }
      }
      mkdir(outDir)
      // names may hold '/': a file under a subdirectory, never outside DIR
      const fileFor = (name: string) => {
        const file = path.resolve(outDir, name)
        if (!file.startsWith(outDir + path.sep)) throw new UsageError(`${name} does not name a file inside ${outDir}: restore it with --region/--blob`, 'restore')
        mkdir(path.dirname(file))
        return file
      }
      const files: { kind: 'region' | 'blob'; name: string; out: string; size: number; bytesWritten: number; chunksWritten: number }[] = []
      for (const [name, spec] of Object.entries(m.regions)) {
        progress.set(`restoring region ${name} of ${m.timeline}@${m.vtime}`)
        const file = fileFor(name)
        const res = await store.restore(cid, name, file)
        files.push({ kind: 'region', name, out: file, size: spec.size, bytesWritten: res.bytes, chunksWritten: res.chunks })
      }
      for (const name of Object.keys(m.blobs)) {
        const data = await store.readBlob(cid, name)
        const file = fileFor(name)
        await writeOutput(file, data)
        files.push({ kind: 'blob', name, out: file, size: data.length, bytesWritten: data.length, chunksWritten: m.blobs[name]!.chunks.length })
      }
      return { cid, m, files }
    })
    progress.end()
    if (asJson) json({ cid: r.cid, timeline: r.m.timeline, vtime: r.m.vtime, out: outDir, files: r.files })
    else for (const f of r.files) line(`${f.kind} ${f.name} of ${r.m.timeline}@${r.m.vtime} ${r.cid} -> ${f.out} (${f.size} B, ${f.chunksWritten} chunk${f.chunksWritten === 1 ? '' : 's'} written)`)
  } finally {
    progress.end()
  }
}

const restore: Command = {
  summary: 'write a region (or a blob) of a checkpoint to a file',
  help: `usage: ckpt restore --store DIR REF --region NAME --out FILE [--json]
       ckpt restore --store DIR REF --blob NAME --out FILE [--json]
       ckpt restore --store DIR REF --all --out DIR [--json]

Writes the region (a sparse file: all-zero chunks become holes) or the blob of the checkpoint to FILE,
or to stdout with --out -. With --all, every region and every blob of the checkpoint goes to
DIR/NAME (DIR is created; a name both a region and a blob carry is a usage error). Every chunk is
verified against its hash on the way.

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
${JSON_HELP} (not with --out -)

examples:
  ckpt restore --store s vm1@5000 --region ram --out ram.bin
  ckpt restore --store s vm1@5000 --all --out vm1-5000/
  ckpt restore --store s vm1 --blob cpu --out - | xxd | head`,
  async run(argv) {
    const { values, positionals } = parse('restore', argv, { ...COMMON, region: { type: 'string' }, blob: { type: 'string' }, all: { type: 'boolean' }, out: { type: 'string' } })
    const ref = oneRef('restore', positionals)
    const dir = storeDir(values.store, 'restore')
    const picked = [values.region !== undefined, values.blob !== undefined, values.all === true].filter(Boolean).length
    if (picked !== 1) throw new UsageError('give one of --region NAME, --blob NAME or --all', 'restore')
    const out = required(values.out, '--out', 'restore')
    if (out === '') throw new UsageError('--out must not be empty', 'restore')
    if (values.all) return restoreAll(dir, ref, out, values.json === true)
    const toStdout = out === '-'
    if (toStdout && values.json) throw new UsageError('--json cannot be used with --out - (stdout carries the data)', 'restore')
    const outPath = toStdout ? '-' : path.resolve(out)
    // a directory is refused before the store is opened
    if (!toStdout) (await import('../output-file.js')).resolveOutput(outPath)

    const progress = new Progress('ckpt restore', Progress.wanted(values.json === true))
    try {
      progress.set('opening the store')
      const { resolveOutput, writeOutput } = await import('../output-file.js')
      const { restoreTo } = await import('../restore.js')
      const r = await withStore(dir, { mustExist: true, readOnly: true }, async (store) => {
        const cid = (await store.resolve(ref)).toString()
        const m = await store.manifest(cid)
        const what = values.region !== undefined ? `region ${values.region}` : `blob ${values.blob}`
        progress.set(`restoring ${what} of ${m.timeline}@${m.vtime}`)
        if (values.blob !== undefined) {
          const data = await store.readBlob(cid, values.blob)
          progress.set('writing')
          const target = toStdout ? '-' : (await writeOutput(outPath, data)).out.target
          if (toStdout) await writeStdout(data)
          return { cid, m, kind: 'blob' as const, name: values.blob, target, size: data.length, bytes: data.length, chunks: m.blobs[values.blob]!.chunks.length }
        }
        const region = values.region!
        const spec = m.regions[region]
        if (!spec) throw new CkptError('CKPT_UNKNOWN_REGION', `checkpoint has no region ${region}`, { region })
        // stdout: front to back, holes as zeros, no buffer or temporary file
        const res = await restoreTo(store, cid, region, toStdout ? { write: writeStdout } : outPath)
        const target = toStdout ? '-' : resolveOutput(outPath).target
        return { cid, m, kind: 'region' as const, name: region, target, size: spec.size, ...res }
      })
      progress.end()
      if (toStdout) return
      const at = `${r.m.timeline}@${r.m.vtime}`
      if (values.json) {
        json({ cid: r.cid, timeline: r.m.timeline, vtime: r.m.vtime, [r.kind]: r.name, out: outPath, ...(r.target !== outPath ? { target: r.target } : {}), size: r.size, bytesWritten: r.bytes, chunksWritten: r.chunks })
      } else {
        line(`${r.kind} ${r.name} of ${at} ${r.cid} -> ${outPath}${r.target !== outPath ? ` (-> ${r.target})` : ''} (${r.size} B, ${r.chunks} chunk${r.chunks === 1 ? '' : 's'} written)`)
      }
    } finally {
      progress.end()
    }
  },
}

// ---------------------------------------------------------------- diff

const diff: Command = {
  summary: 'list what changed between two checkpoints',
  help: `usage: ckpt diff --store DIR REF_A REF_B [--json]

Lists the changes from REF_A to REF_B, one per line:
  ram: chunks 10-12 changed (3 x 4096 B)     chunk ranges are inclusive
  region NAME added | removed | resized
  blob NAME added | removed | changed
Nothing is printed when they are equal. With --json one object per line:
{kind: "chunks", region, start, end, chunkSize} (end exclusive), {kind: "region-...", region} or
{kind: "blob-...", blob}.

${REF_HELP}

${STORE_HELP}
${JSON_HELP}

examples:
  ckpt diff --store s vm1@1000 vm1@2000
  ckpt diff --store s vm1@0 vm1 --json`,
  async run(argv) {
    const { values, positionals } = parse('diff', argv, COMMON)
    if (positionals.length !== 2) throw new UsageError(positionals.length < 2 ? 'diff needs two REFs' : `unexpected argument ${JSON.stringify(positionals[2])}`, 'diff')
    const dir = storeDir(values.store, 'diff')
    await withStore(dir, READ, async (store) => {
      for await (const e of store.diff(positionals[0]!, positionals[1]!)) {
        if (values.json) json(e)
        else line(diffText(e))
      }
    })
  },
}

// ---------------------------------------------------------------- stats

const stats: Command = {
  summary: 'print store statistics',
  help: `usage: ckpt stats --store DIR [--json]

Prints the store's counts and sizes (store.stats()) and:
  logical bytes   sum over all checkpoints of their regions' and blobs' sizes
  stored bytes    pack bytes + index bytes
  dedup ratio     logical bytes / pack bytes

${STORE_HELP}
${JSON_HELP}

examples:
  ckpt stats --store s
  ckpt stats --store s --json`,
  async run(argv) {
    const { values, positionals } = parse('stats', argv, COMMON)
    noPositionals('stats', positionals)
    const dir = storeDir(values.store, 'stats')
    await withStore(dir, READ, async (store) => {
      const s = await store.stats()
      let logicalBytes = 0
      for await (const e of store.log()) {
        const m = await store.manifest(e.cid)
        for (const r of Object.values(m.regions)) logicalBytes += r.size
        for (const b of Object.values(m.blobs)) logicalBytes += b.size
      }
      const storedBytes = s.packBytes + s.indexBytes
      const dedupRatio = s.packBytes > 0 ? logicalBytes / s.packBytes : null
      if (values.json) {
        json({ ...s, storedBytes, logicalBytes, dedupRatio })
        return
      }
      const b = (n: number) => `${n} (${humanBytes(n)})`
      for (const l of columns([
        ['timelines', String(s.timelines)],
        ['checkpoints', String(s.checkpoints)],
        ['blocks', String(s.blocks)],
        ['packs', String(s.packs)],
        ['pack bytes', b(s.packBytes)],
        ['index bytes', b(s.indexBytes)],
        ['filter bytes', b(s.filterBytes)],
        ['stored bytes', b(storedBytes)],
        ['logical bytes', b(logicalBytes)],
        ['dedup ratio', dedupRatio === null ? '-' : `${dedupRatio.toFixed(2)}x`],
      ]))
        line(l)
    })
  },
}

// ---------------------------------------------------------------- export

const exportCmd: Command = {
  summary: 'write checkpoints to a bundle (a CAR file any IPFS tool reads)',
  help: `usage: ckpt export --store DIR REF... --out FILE [--since REF]... [--compress [--compress-with zstd|gzip]] [--json]

Writes the checkpoints and every block they reach, once each, as a CAR v1 file whose roots are the
checkpoints. With --since, blocks reachable from those checkpoints (which the receiver already has)
are left out: a thin bundle. --out - writes to stdout, e.g. to pipe into "ckpt import -" on another
machine. --compress compresses the whole file (zstd where it is available, else gzip); import
recognises it by itself. Every block is verified against its hash as it is read.

${REF_HELP}

${STORE_HELP}
  --out FILE           the bundle (- for stdout); written under a temporary name and renamed when
                       complete (a symlink's target so; a FIFO or device written in place)
  --since REF          a checkpoint the receiver has (repeatable)
  --compress           compress the bundle file
  --compress-with C    zstd or gzip (implies --compress)
${JSON_HELP} (not with --out -)

examples:
  ckpt export --store s run-42 --out run-42.car
  ckpt export --store s run-42@0 run-42@5000000 --out two.car --compress
  ckpt export --store s run-42 --since run-42@1000 --out - | ssh lab ckpt import --store /data/ckpt -`,
  async run(argv) {
    const { values, positionals } = parse('export', argv, {
      ...COMMON,
      out: { type: 'string' },
      since: { type: 'string', multiple: true },
      compress: { type: 'boolean' },
      'compress-with': { type: 'string' },
    })
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
    if (!toStdout) (await import('../output-file.js')).resolveOutput(outPath)
    const progress = new Progress('ckpt export', Progress.wanted(values.json === true))
    try {
      const summary = await withStore(dir, { mustExist: true, readOnly: true }, async (store) => {
        const { exportBundle } = await import('../bundle.js')
        progress.set('resolving checkpoints')
        const stream = exportBundle(store, positionals, {
          since: values.since ?? [],
          compress,
          onProgress: (p) => progress.amount(`${p.blocks} blocks`, p.bytes),
        })
        if (toStdout) {
          await pipeline(Readable.from(stream), process.stdout, { end: false })
          const sum = await stream.summary
          return { ...sum, fileBytes: sum.carBytes, target: '-' }
        }
        const { writeOutput } = await import('../output-file.js')
        const w = await writeOutput(outPath, stream)
        return { ...(await stream.summary), fileBytes: w.bytes, target: w.out.target }
      })
      progress.end()
      if (toStdout) return
      const fileBytes = summary.fileBytes
      if (values.json) {
        json({ out: outPath, ...(summary.target !== outPath ? { target: summary.target } : {}), checkpoints: summary.roots.length, roots: summary.roots, blocks: summary.blocks, bytes: summary.bytes, skipped: summary.skipped, carBytes: summary.carBytes, fileBytes, compression: summary.compression })
      } else {
        line(`exported ${summary.roots.length} checkpoint${summary.roots.length === 1 ? '' : 's'} to ${outPath}${summary.target !== outPath ? ` (-> ${summary.target})` : ''}`)
        for (const l of columns([
          ['blocks', `${summary.blocks} (${humanBytes(summary.bytes)})${summary.skipped ? `, ${summary.skipped} left out (already sent or in --since)` : ''}`],
          ['file', `${humanBytes(fileBytes)}${summary.compression === 'none' ? '' : ` (${summary.compression}; ${humanBytes(summary.carBytes)} uncompressed)`}`],
        ]))
          line('  ' + l)
      }
    } finally {
      progress.end()
    }
  },
}

// ---------------------------------------------------------------- import

const importCmd: Command = {
  summary: 'add the checkpoints of a bundle (CAR file) to the store',
  help: `usage: ckpt import --store DIR FILE [--as NAME | --timeline-prefix PREFIX] [--json]

Reads a bundle (CAR v1 or v2; plain, zstd or gzip), checks every block against its hash and every
checkpoint's DAG for completeness (blocks may also come from the store: thin bundles), and only then
makes the checkpoints visible, all at once. A bad bundle changes nothing visible. FILE - reads stdin.
Importing a bundle twice is a no-op. A timeline that exists here with another history (another
lineage) is never merged: give --as NAME (a bundle of one timeline) or --timeline-prefix PREFIX.

${STORE_HELP}
  --as NAME               import the bundle's timeline under this name
  --timeline-prefix P     prefix the names of all imported timelines
${JSON_HELP}

examples:
  ckpt import --store s run-42.car
  ckpt import --store s ci-failure.car --timeline-prefix ci/
  ssh ci ckpt export --store /ckpt run-42 --out - | ckpt import --store s -`,
  async run(argv) {
    const { values, positionals } = parse('import', argv, { ...COMMON, as: { type: 'string' }, 'timeline-prefix': { type: 'string' } })
    const file = oneRef('import', positionals)
    const dir = storeDir(values.store, 'import')
    if (values.as !== undefined && values['timeline-prefix'] !== undefined) throw new UsageError('give --as or --timeline-prefix, not both', 'import')
    let total: number | undefined
    let read = 0
    let counted: AsyncIterable<Uint8Array>
    if (file === '-') {
      counted = (async function* () {
        for await (const c of process.stdin) {
          read += (c as Uint8Array).length
          yield c as Uint8Array
        }
      })()
    } else {
      total = fileSize(file)
      const { fileSource } = await import('../bundle.js')
      counted = fileSource(file, (n) => (read += n))
    }
    const progress = new Progress('ckpt import', Progress.wanted(values.json === true))
    try {
      const s = await withStore(dir, { dedupFilter: true }, async (store) => {
        const { importBundle } = await import('../bundle.js')
        return importBundle(store, counted, {
          as: values.as,
          timelinePrefix: values['timeline-prefix'],
          onProgress: (p) => progress.amount(`${p.blocks} blocks`, read, total),
        })
      })
      progress.end()
      if (values.json) {
        json({ file: file === '-' ? '-' : path.resolve(file), ...s })
        return
      }
      const what = s.checkpoints === 0 ? 'nothing new' : `${s.checkpoints} checkpoint${s.checkpoints === 1 ? '' : 's'}`
      line(`imported ${what} into ${s.timelines.join(', ')}${s.alreadyPresent ? ` (${s.alreadyPresent} already present)` : ''}`)
      for (const l of columns([
        ['blocks', `${s.blocks} read, ${s.newBlocks} new, ${s.presentBlocks} already present`],
        ['bytes', `${humanBytes(s.bytes)} read, ${humanBytes(s.storedBytes)} stored`],
      ]))
        line('  ' + l)
    } finally {
      progress.end()
    }
  },
}

// ---------------------------------------------------------------- verify

function findingText(f: import('../verify.js').Finding): string[] {
  const where = f.pack !== undefined ? ` [pack ${f.pack}${f.offset !== undefined ? ` @${f.offset}` : ''}]` : ''
  const out = [`${f.severity.padEnd(7)} ${f.phase.padEnd(9)} ${f.kind}${where}: ${f.message}`]
  if (f.checkpoints?.length) {
    const shown = f.checkpoints.slice(0, 5).map((c) => `${c.timeline}@${c.vtime}`)
    out.push(`        damages ${shown.join(', ')}${f.checkpoints.length > 5 ? ` and ${f.checkpoints.length - 5} more` : ''}`)
  }
  return out
}

const verify: Command = {
  summary: 'check the store: structure, every checkpoint\'s DAG, and (--deep) every block',
  help: `usage: ckpt verify --store DIR [REF...] [--deep | --sample PCT] [--json]

Checks, cheap first: 1. structure — every pack is read front to back (headers, entry checksums,
footers) and agrees with the index; 2. dag — every checkpoint (or only the REFs) is walked from its
manifest: every node decodes, every link resolves to an intact block of the right size, catalog
entries and refs point at manifests; 3. data (--deep, or --sample PCT of the blocks) — every block
is read, decompressed and re-hashed. Prints every finding (JSON lines with --json), the checkpoints
each damaged block hurts, a summary and what to do next.

exit status: 0 clean, 1 problems found, 2 usage error, 3 the store cannot be opened

${REF_HELP}

${STORE_HELP}
  --deep             read and re-hash every block
  --sample PCT       read and re-hash a random PCT% of the blocks
${JSON_HELP}

examples:
  ckpt verify --store s
  ckpt verify --store s --deep
  ckpt verify --store s run-42@5000000 --sample 10 --json`,
  async run(argv) {
    const { values, positionals } = parse('verify', argv, { ...COMMON, deep: { type: 'boolean' }, sample: { type: 'string' } })
    const dir = storeDir(values.store, 'verify')
    if (values.deep && values.sample !== undefined) throw new UsageError('give --deep or --sample, not both', 'verify')
    let sample: number | undefined
    if (values.sample !== undefined) {
      sample = Number(values.sample.replace(/%$/, ''))
      if (!Number.isFinite(sample) || sample <= 0 || sample > 100) throw new UsageError(`--sample must be a percentage in (0, 100], not ${JSON.stringify(values.sample)}`, 'verify')
    }
    const progress = new Progress('ckpt verify', Progress.wanted(values.json === true))
    let status: ExitCode = EXIT.OK
    try {
      await withStore(dir, { mustExist: true, readOnly: true }, async (store) => {
        const { verifyStore } = await import('../verify.js')
        const it = verifyStore(store, {
          refs: positionals,
          deep: values.deep === true,
          sample,
          onProgress: (p) => progress.amount(p.phase, p.done, p.total, p.unit === 'bytes' ? 'B' : 'checkpoints'),
        })
        for (;;) {
          const r = await it.next()
          if (r.done) {
            progress.end()
            const s = r.value
            if (values.json) json({ summary: s })
            else {
              const secs = (ms: number) => (ms / 1000).toFixed(2)
              line(
                `${s.clean ? 'clean' : 'PROBLEMS'}: ${s.checkpoints} checkpoint${s.checkpoints === 1 ? '' : 's'}, ${s.blocks} blocks in ${s.packs} pack${s.packs === 1 ? '' : 's'} checked` +
                  ` (structure ${secs(s.ms.structure)} s, dag ${secs(s.ms.dag)} s${values.deep || sample ? `, data ${secs(s.ms.data)} s for ${s.dataBlocks} blocks` : ''});` +
                  ` ${s.errors} error${s.errors === 1 ? '' : 's'}, ${s.warnings} warning${s.warnings === 1 ? '' : 's'}${s.infos ? `, ${s.infos} note${s.infos === 1 ? '' : 's'}` : ''}`,
              )
              if (s.damagedCheckpoints.length) {
                const names = s.damagedCheckpoints.map((c) => `${c.timeline}@${c.vtime}`)
                line(`damaged checkpoints (${names.length}): ${names.slice(0, 10).join(', ')}${names.length > 10 ? `, and ${names.length - 10} more (--json lists all)` : ''}`)
              }
              for (const a of s.advice) line(`next: ${a}`)
              if (s.clean && !values.deep && !sample) line('next: ckpt verify --deep re-hashes every block too')
            }
            status = s.clean ? EXIT.OK : EXIT.DATA
            return
          }
          progress.end()
          if (values.json) json({ finding: r.value })
          else for (const l of findingText(r.value)) line(l)
        }
      })
    } finally {
      progress.end()
    }
    return status
  },
}

// ---------------------------------------------------------------- repair

const repair: Command = {
  summary: 'heal a damaged store: from a copy, by rebuilding the index, or by dropping what is lost',
  help: `usage: ckpt repair --store DIR (--from SOURCE | --rebuild-index [--adopt] | --drop-damaged)... [--shallow] [--json]

  --from SOURCE      fetch damaged or missing blocks by CID from SOURCE (another store, or a bundle
                     file such as one made earlier with ckpt export), verify and write them anew
  --rebuild-index    rebuild the whole index from the packs: block locations from the entries (each
                     names its CID and carries a checksum), the catalog (timelines, checkpoints,
                     refs, policies) from the catalog records every commit writes into the packs;
                     what the old index knew that no record holds is kept. A damaged index LevelDB
                     cannot repair is set aside (index.broken-MS); one the OS will not open (a full
                     disk, permissions, a read-only medium) is an error, never set aside
  --adopt            with --rebuild-index: catalogue the checkpoints found in the packs that no
                     catalog record covers, from their own manifests (they are listed otherwise)
  --drop-damaged     remove from the catalog every checkpoint that still cannot be read, and say which

Several may be given; they run in the order above. Packs with damage in them are retired (no more
appends; gc rewrites them). Finds damage with verify --deep (--shallow: without the data phase).
When the catalog and the packs' records still disagree afterwards, the catalog is rebuilt from both.
A missing, emptied or stale index needs no repair: the next command that writes rebuilds it, and
read-only commands read from the packs meanwhile.
exit status: 0 the store is clean afterwards, 1 damage remains, 2 usage error, 3 cannot be opened

${STORE_HELP}
  --shallow          look for damage without re-hashing every block
${JSON_HELP}

examples:
  ckpt repair --store s --from backup.car
  ckpt repair --store s --from /mnt/mirror/s
  ckpt repair --store s --rebuild-index
  ckpt repair --store s --rebuild-index --adopt
  ckpt repair --store s --from backup.car --drop-damaged`,
  async run(argv) {
    const { values, positionals } = parse('repair', argv, { ...COMMON, from: { type: 'string' }, 'rebuild-index': { type: 'boolean' }, adopt: { type: 'boolean' }, 'drop-damaged': { type: 'boolean' }, shallow: { type: 'boolean' } })
    noPositionals('repair', positionals)
    const dir = storeDir(values.store, 'repair')
    if (!values.from && !values['rebuild-index'] && !values['drop-damaged']) throw new UsageError('give --from SOURCE, --rebuild-index or --drop-damaged', 'repair')
    const progress = new Progress('ckpt repair', Progress.wanted(values.json === true))
    try {
      progress.set('checking the store')
      const { repairStore } = await import('../repair.js')
      let s: import('../repair.js').RepairSummary
      try {
        s = await repairStore(dir, {
          from: values.from,
          rebuildIndex: values['rebuild-index'] === true,
          adopt: values.adopt === true,
          dropDamaged: values['drop-damaged'] === true,
          deep: values.shallow !== true,
          onProgress: (p) => progress.amount(p.phase, p.done, p.total, 'packs'),
        })
      } catch (err) {
        // the store could not be opened (locked, not a store, a version, or the index: details.state)
        if (isCkptError(err) && (['CKPT_LOCKED', 'CKPT_BAD_STORE', 'CKPT_VERSION'].includes(err.code) || err.details.state !== undefined)) throw new StoreOpenError(err)
        throw err
      }
      progress.end()
      if (values.json) json(s)
      else {
        if (s.rebuiltIndex) {
          const r = s.rebuiltIndex
          const n = (k: number, one: string, many = `${one}s`) => `${k} ${k === 1 ? one : many}`
          line(
            `rebuilt the index from ${n(r.packs, 'pack')}${r.recovered ? ` (${r.recovered} set aside earlier brought back)` : ''}: ${n(r.blocks, 'block')}, ${n(r.checkpoints, 'checkpoint')} in ${n(r.timelines, 'timeline')}, ${n(r.refs, 'ref')}` +
              (r.legacy ? (r.adopted ? `; no catalog records (format 1): ${n(r.adopted, 'checkpoint')} catalogued from their manifests` : '; no catalog records (format 1): the old index\'s catalog kept') : `, from ${n(r.records, 'catalog record')}`) +
              (r.keptFromIndex ? `; ${n(r.keptFromIndex, 'catalog entry', 'catalog entries')} no record held kept from the old index` : '') +
              (!r.legacy && r.adopted ? `; ${n(r.adopted, 'checkpoint')} adopted from their manifests` : ''),
          )
          if (r.setAside) line(`the damaged index was set aside as ${r.setAside}`)
          if (r.missingRecords) line(`warning: ${n(r.missingRecords, 'catalog record')} could not be read (damaged packs): the catalog may lack their changes`)
          if (r.damagedPacks.length) line(`packs with damage in them (retired): ${r.damagedPacks.join(', ')}`)
          if (r.uncovered.length) {
            line(`${n(r.uncovered.length, 'checkpoint')} found in the packs that no catalog record covers (not catalogued):`)
            for (const u of r.uncovered.slice(0, 10)) line(`  ${u.timeline}@${u.vtime} ${u.cid}`)
            if (r.uncovered.length > 10) line(`  and ${r.uncovered.length - 10} more (--json lists all)`)
            line(`next: catalogue them: ckpt repair --store ${dir} --rebuild-index --adopt; or remove them: ckpt rm --store ${dir} CID...`)
          }
        }
        if (values.from) line(`fetched ${s.fetched.length} block${s.fetched.length === 1 ? '' : 's'} from ${values.from}${s.recatalogued ? `; ${s.recatalogued} checkpoint${s.recatalogued === 1 ? '' : 's'} the catalog had lost catalogued again` : ''}`)
        for (const n of s.notes) line(`note: ${n}`)
        if (s.dropped.length) line(`dropped ${s.dropped.length} checkpoint${s.dropped.length === 1 ? '' : 's'} that could not be healed: ${s.dropped.map((c) => `${c.timeline}@${c.vtime}`).join(', ')}`)
        if (s.after.clean) line('the store is clean')
        else {
          line(`still damaged: ${s.stillDamaged.length} block${s.stillDamaged.length === 1 ? '' : 's'}, ${s.after.damagedCheckpoints.length} checkpoint${s.after.damagedCheckpoints.length === 1 ? '' : 's'}`)
          for (const a of s.after.advice) line(`next: ${a}`)
        }
      }
      return s.after.clean ? EXIT.OK : EXIT.DATA
    } finally {
      progress.end()
    }
  },
}


// ---------------------------------------------------------------- thin, rm, fork, ref, gc

/** A policy spec checked before the store is opened ("none": remove the policy). */
async function checkPolicy(spec: string, command: string): Promise<string | null> {
  if (spec === 'none') return null
  const { parsePolicy } = await import('../policy.js')
  try {
    return parsePolicy(spec).text
  } catch (err) {
    if (isCkptError(err)) throw new UsageError(err.message, command)
    throw err
  }
}

const POLICY_HELP = `SPEC is a comma-separated list of rules, in virtual time (vtime read as nanoseconds when a unit
is given: ns us ms s m h d; a bare number is raw vtime units):
  INTERVAL@HORIZON   keep one checkpoint per INTERVAL (the oldest in each INTERVAL-aligned bucket)
                     among those at most HORIZON older than the newest; HORIZON may be inf
  all@HORIZON        keep every checkpoint within HORIZON
  last=N             keep the newest N whatever their age
A checkpoint older than every horizon is dropped. Never dropped: the newest checkpoint, checkpoints
with a label or pin in their meta, and checkpoints a ref names (ckpt ref).`

const thin: Command = {
  summary: "drop a timeline's checkpoints that a retention policy does not keep",
  help: `usage: ckpt thin --store DIR --timeline NAME (--policy SPEC | --saved) [--dry-run] [--json]

Removes from the catalog the checkpoints of timeline NAME that the policy does not keep; their blocks
stay until ckpt gc. Prints how many were kept and dropped (--json: {policy, kept, dropped, dryRun}
with every checkpoint). With --dry-run nothing changes.

${POLICY_HELP}

${STORE_HELP}
  --timeline NAME    the timeline
  --policy SPEC      the policy to apply (once; ckpt add --policy makes a timeline thin itself)
  --saved            apply the policy the timeline carries
  --dry-run          only say what would be dropped
${JSON_HELP}

examples:
  ckpt thin --store s --timeline run-42 --policy 10ms@1s,100ms@10s,1s@1m,10s@1h --dry-run
  ckpt thin --store s --timeline run-42 --policy last=100`,
  async run(argv) {
    const { values, positionals } = parse('thin', argv, { ...COMMON, timeline: { type: 'string' }, policy: { type: 'string' }, saved: { type: 'boolean' }, 'dry-run': { type: 'boolean' } })
    noPositionals('thin', positionals)
    const dir = storeDir(values.store, 'thin')
    const name = required(values.timeline, '--timeline', 'thin')
    if ((values.policy === undefined) === (values.saved !== true)) throw new UsageError('give --policy SPEC or --saved', 'thin')
    const spec = values.policy === undefined ? undefined : await checkPolicy(values.policy, 'thin')
    if (spec === null) throw new UsageError('--policy none drops nothing; give a policy', 'thin')
    const dryRun = values['dry-run'] === true
    const r = await withStore(dir, dryRun ? READ : { mustExist: true, threads: 0 }, async (store) => {
      let policy = spec
      if (policy === undefined) {
        policy = (await store.timeline(name)).policy
        if (policy === undefined) throw new CkptError('CKPT_BAD_ARGUMENT', `timeline ${name} carries no policy (ckpt add --policy sets one)`, { timeline: name })
      }
      return store.thin(name, policy, { dryRun })
    })
    const entry = (e: { timeline: string; vtime: bigint; cid: { toString(): string } }) => ({ timeline: e.timeline, vtime: e.vtime, cid: e.cid.toString() })
    if (values.json) json({ policy: r.policy, dryRun: r.dryRun, kept: r.kept.map(entry), dropped: r.dropped.map(entry) })
    else {
      line(`${r.dryRun ? 'would keep' : 'kept'} ${r.kept.length}, ${r.dryRun ? 'would drop' : 'dropped'} ${r.dropped.length} checkpoint${r.dropped.length === 1 ? '' : 's'} of ${name} (policy ${r.policy})`)
      if (r.dryRun) for (const d of r.dropped.slice(0, 20)) line(`  drop ${d.timeline}@${d.vtime} ${d.cid}`)
      if (r.dryRun && r.dropped.length > 20) line(`  ... and ${r.dropped.length - 20} more (--json lists all)`)
      if (!r.dryRun && r.dropped.length) line('next: ckpt gc reclaims the space')
    }
  },
}

const rm: Command = {
  summary: 'remove checkpoints from the catalog',
  help: `usage: ckpt rm --store DIR REF... [--json]
       ckpt rm --store DIR --uncatalogued [--json]

Removes each checkpoint from its timeline (a CID catalogued in several timelines goes from all). A
checkpoint a ref names must first lose its ref (ckpt ref --delete NAME). Blocks stay until ckpt gc.
The removal is recorded in the packs, so a rebuilt index knows it too.

A CID stored in the packs but in no timeline, whose removal no record explains (ckpt verify names
such checkpoints; gc waits while there are any), is removed at the place its manifest names.
--uncatalogued removes every such checkpoint (to catalogue them instead: ckpt repair --rebuild-index
--adopt).

REF is a checkpoint CID, TIMELINE@VTIME (exactly that vtime: rm never takes the nearest), TIMELINE
(its latest checkpoint) or ref:NAME.

${STORE_HELP}
  --uncatalogued     every checkpoint stored in no timeline with no recorded removal
${JSON_HELP}

examples:
  ckpt rm --store s run-42@5000000
  ckpt rm --store s bafyr4i...
  ckpt rm --store s --uncatalogued`,
  async run(argv) {
    const { values, positionals } = parse('rm', argv, { ...COMMON, uncatalogued: { type: 'boolean' } })
    const dir = storeDir(values.store, 'rm')
    if (values.uncatalogued && positionals.length) throw new UsageError('give REFs or --uncatalogued, not both', 'rm')
    if (positionals.length === 0 && !values.uncatalogued) throw new UsageError('give at least one checkpoint (REF), or --uncatalogued', 'rm')
    const gone = await withStore(dir, { mustExist: true, threads: 0 }, async (store) => {
      if (!values.uncatalogued) return store.rm(positionals)
      const list: string[] = []
      for await (const e of store.uncatalogued()) list.push(e.cid.toString())
      return list.length ? store.rm(list) : []
    })
    if (values.json) json({ removed: gone.map((e) => ({ timeline: e.timeline, vtime: e.vtime, cid: e.cid.toString() })) })
    else {
      for (const e of gone) line(`removed ${e.timeline}@${e.vtime} ${e.cid}`)
      line('next: ckpt gc reclaims the space')
    }
  },
}

const fork: Command = {
  summary: 'start a new timeline from a checkpoint (sharing all its blocks)',
  help: `usage: ckpt fork --store DIR REF --timeline NEW [--policy SPEC] [--json]

Creates timeline NEW whose first checkpoint is REF's content at REF's vtime (a new manifest of a few
hundred bytes; every block is shared). Checkpoints added to NEW build on it; REF's timeline is
untouched. For "what if" replays from a point of a recording.

${REF_HELP}

${STORE_HELP}
  --timeline NEW     the new timeline (must not exist)
  --policy SPEC      a retention policy for it (see ckpt thin --help)
${JSON_HELP}

examples:
  ckpt fork --store s run-42@5000000 --timeline run-42-whatif`,
  async run(argv) {
    const { values, positionals } = parse('fork', argv, { ...COMMON, timeline: { type: 'string' }, policy: { type: 'string' } })
    const dir = storeDir(values.store, 'fork')
    if (positionals.length !== 1) throw new UsageError('give one checkpoint (REF) to fork from', 'fork')
    const name = required(values.timeline, '--timeline', 'fork')
    const policy = values.policy === undefined ? undefined : await checkPolicy(values.policy, 'fork')
    const e = await withStore(dir, { mustExist: true, threads: 0 }, (store) => store.fork(name, positionals[0]!, policy ? { policy } : {}))
    if (values.json) json({ timeline: e.timeline, vtime: e.vtime, cid: e.cid.toString() })
    else line(`${e.timeline}@${e.vtime} ${e.cid}`)
  },
}

const ref: Command = {
  summary: 'name a checkpoint (a pin: thin keeps it, gc keeps its blocks), or list refs',
  help: `usage: ckpt ref --store DIR [NAME REF | --delete NAME] [--json]

With NAME REF: sets ref NAME to checkpoint REF (later: ref:NAME wherever a REF is taken). With
--delete NAME: removes it. Alone: lists the refs, NAME CID per line.

${REF_HELP}

${STORE_HELP}
  --delete NAME      remove ref NAME
${JSON_HELP}

examples:
  ckpt ref --store s crash run-42@5000000
  ckpt restore --store s ref:crash --region ram --out ram.bin
  ckpt ref --store s --delete crash`,
  async run(argv) {
    const { values, positionals } = parse('ref', argv, { ...COMMON, delete: { type: 'string' } })
    const dir = storeDir(values.store, 'ref')
    if (values.delete !== undefined) {
      noPositionals('ref', positionals)
      const had = await withStore(dir, { mustExist: true, threads: 0 }, (store) => store.deleteRef(values.delete!))
      if (!had) throw new CkptError('CKPT_NOT_FOUND', `no ref named ${values.delete}`, { ref: values.delete })
      if (values.json) json({ deleted: values.delete })
      else line(`deleted ref ${values.delete}`)
      return
    }
    if (positionals.length === 2) {
      const [name, target] = positionals as [string, string]
      const r = (await withStore(dir, { mustExist: true, threads: 0 }, (store) => store.setRef(name, target))) as { cid: { toString(): string } }
      if (values.json) json({ ref: name, cid: r.cid.toString() })
      else line(`${name} ${r.cid}`)
      return
    }
    if (positionals.length !== 0) throw new UsageError('give NAME REF, --delete NAME, or nothing (to list)', 'ref')
    const all = await withStore(dir, READ, async (store) => {
      const out: { name: string; cid: string }[] = []
      for await (const r of store.refs()) out.push({ name: r.name, cid: r.cid.toString() })
      return out
    })
    for (const r of all) values.json ? json(r) : line(`${r.name} ${r.cid}`)
  },
}

/** A percentage option of gc ("50" or "50%", in [0, 100]) as a fraction; undefined when not given. */
function fraction(v: string | undefined, option: string): number | undefined {
  if (v === undefined) return undefined
  const pct = Number(v.replace(/%$/, ''))
  if (v.trim() === '' || !Number.isFinite(pct) || pct < 0 || pct > 100) throw new UsageError(`${option} must be a percentage in [0, 100], not ${JSON.stringify(v)}`, 'gc')
  return pct / 100
}

const gc: Command = {
  summary: 'reclaim the space of blocks no checkpoint or ref reaches',
  help: `usage: ckpt gc --store DIR [--threshold PCT] [--max-unused PCT] [--dry-run] [--json]

Marks every block reachable from the catalog's checkpoints and the refs, then deletes packs with
nothing live in them and rewrites those whose live share is below the threshold (their live blocks
are copied into a new pack, the old file deleted), and then the deadest others while the dead bytes
left would exceed --max-unused of the live ones. Tree nodes kept only as delta bases of thinned
checkpoints are not kept: the live nodes built on them are stored anew. Holds the store's writer lock; a kill at any
point leaves a consistent store (SPEC.md §15). Prints packs rewritten and deleted, and bytes
reclaimed (--json: the whole summary).

${STORE_HELP}
  --threshold PCT    rewrite packs less than PCT% live (default 50; 100 rewrites every pack with
                     any dead block; 0 only deletes dead packs)
  --max-unused PCT   leave at most PCT% dead bytes (of the live bytes) in packs kept (default 2;
                     100: only the threshold decides)
  --dry-run          only say what would be reclaimed
${JSON_HELP}

examples:
  ckpt gc --store s
  ckpt gc --store s --threshold 90 --json`,
  async run(argv) {
    const { values, positionals } = parse('gc', argv, { ...COMMON, threshold: { type: 'string' }, 'max-unused': { type: 'string' }, 'dry-run': { type: 'boolean' } })
    noPositionals('gc', positionals)
    const dir = storeDir(values.store, 'gc')
    const threshold = fraction(values.threshold, '--threshold')
    const maxUnused = fraction(values['max-unused'], '--max-unused')
    const dryRun = values['dry-run'] === true
    const progress = new Progress('ckpt gc', Progress.wanted(values.json === true))
    try {
      // no dedup filter: this process writes only copies, and its memory stays flat whatever the store's size
      // a dry run changes nothing: it opens the store read-only (no index rebuilt, nothing written)
      const s = await withStore(dir, { mustExist: true, threads: 0, dedupFilter: false, readOnly: dryRun }, (store) =>
        store.gc({ threshold, maxUnused, dryRun, onProgress: (p) => progress.amount(p.phase === 'mark' ? 'marking live blocks' : 'rewriting packs', p.done, p.total, p.phase === 'mark' ? 'roots' : 'packs') }),
      )
      progress.end()
      if (values.json) json(s)
      else {
        const would = dryRun ? 'would ' : ''
        line(
          `${s.roots} root${s.roots === 1 ? '' : 's'}, ${s.liveBlocks} live blocks (${humanBytes(s.liveBytes)}); ${would}rewrite ${s.packsRewritten} pack${s.packsRewritten === 1 ? '' : 's'} (${humanBytes(s.rewrittenBytes)} copied), ${would}delete ${s.packsDeleted} dead pack${s.packsDeleted === 1 ? '' : 's'}`,
        )
        if (s.nodesReencoded) line(`stored ${s.nodesReencoded} tree node${s.nodesReencoded === 1 ? '' : 's'} anew (${humanBytes(s.reencodedBytes)}) so the delta bases of removed checkpoints can go`)
        if (dryRun && s.baseOnlyBytes) line(`${humanBytes(s.baseOnlyBytes)} of tree nodes are live only as delta bases: gc stores the nodes built on them anew`)
        if (s.packsSkipped) line(`left ${s.packsSkipped} pack${s.packsSkipped === 1 ? '' : 's'} as they are: ${s.damagedLiveBlocks} live block${s.damagedLiveBlocks === 1 ? '' : 's'} in them did not read back intact; next: ckpt verify --store ${dir} --deep`)
        line(`${dryRun ? 'would reclaim' : 'reclaimed'} ${humanBytes(s.reclaimedBytes)}: packs ${humanBytes(s.bytesBefore)} -> ${humanBytes(s.bytesAfter)}${s.deadBytesKept ? `; ${humanBytes(s.deadBytesKept)} dead left in packs above the threshold` : ''}${s.orphansRemoved ? `; ${s.orphansRemoved} set-aside pack${s.orphansRemoved === 1 ? '' : 's'} removed` : ''}`)
      }
    } finally {
      progress.end()
    }
  },
}

/**
 * A command that writes output files, with SIGINT/SIGTERM/SIGHUP handlers while it runs: they remove
 * this process's temporary files (TARGET.ckpt-partial-PID) and then end the process by the same signal
 * (the default action, back in place: a shell says 130, 143, 129).
 */
function removingPartialsOnSignals(c: Command): Command {
  return {
    ...c,
    async run(argv) {
      const { removePartialFiles } = await import('../output-file.js')
      const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const
      const off = () => signals.forEach((s) => process.off(s, onSignal))
      const onSignal = (sig: NodeJS.Signals) => {
        removePartialFiles()
        off()
        process.kill(process.pid, sig)
        // the default action ends the process; should it not have, end as a shell would say it
        setTimeout(() => process.exit(128 + (os.constants.signals[sig] ?? 0)), 1000)
      }
      signals.forEach((s) => process.on(s, onSignal))
      try {
        return await c.run(argv)
      } finally {
        off()
      }
    },
  }
}

export const COMMANDS: ReadonlyMap<string, Command> = new Map([
  ['init', init],
  ['add', add],
  ['log', log],
  ['show', show],
  ['seek', seek],
  ['restore', removingPartialsOnSignals(restore)],
  ['diff', diff],
  ['stats', stats],
  ['export', removingPartialsOnSignals(exportCmd)],
  ['import', importCmd],
  ['verify', verify],
  ['repair', repair],
  ['thin', thin],
  ['rm', rm],
  ['fork', fork],
  ['ref', ref],
  ['gc', gc],
])
