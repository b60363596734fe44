/**
 * The index-loss matrix (issue 10: the packs are the truth, the index a cache rebuilt whole).
 *
 * One store with real history (three timelines, one forked, one thinning itself; dirty hints, blobs,
 * labels and meta; refs set, moved and deleted; a thin, an rm, a policy change; a gc in the middle,
 * so a snapshot exists and older catalog records are gone; more commits after it) is recorded
 * through the public API: logs, timeline records, refs, seeks, every checkpoint's restored bytes.
 * Then, on a fresh copy per case, the index is lost one way — CURRENT deleted, index/ deleted, an
 * empty LevelDB in its place, one .ldb deleted, MANIFEST damaged, a full disk, a read-only medium,
 * another user — and after the documented recovery (automatic for the first three, `ckpt repair
 * --rebuild-index` for the damaged ones, nothing for the medium once it is fixed) everything
 * recorded must be back, equal, restorable byte for byte, verify --deep clean, and a gc afterwards
 * must run and lose nothing. Readers must work from the packs alone meanwhile and write nothing.
 *
 * Mounting and setpriv need root: those cases are skipped with a message otherwise.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createHash } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openStore, type CkptStore, type Finding, type VerifySummary } from '../../src/index.js'
import { LevelKV } from '../../store/level-kv.js'
import { makeRng, type Rng } from '../helpers/rng.js'
import { runVerify } from '../helpers/verify.js'
import { dirBytes, removeTmpDirs, tmpDir } from '../helpers/tmp.js'
import { mountTmpfs, unmountTmpfs } from '../helpers/tmpfs.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const CLI = path.join(ROOT, 'dist/cli/ckpt.js')
const isRoot = process.getuid?.() === 0
const canSetpriv = isRoot && spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'true']).status === 0

const PAGE = 4096
const REGIONS = { ram: { size: 256 * 1024, chunkSize: PAGE }, disk: { size: 512 * 1024, chunkSize: 16384 } }
const ROLLING = { ram: { size: 128 * 1024, chunkSize: PAGE } }

let base: string
/** the ground truth, recorded through the public API before any loss */
let truth: Truth
const mounts: string[] = []

afterAll(() => {
  for (const m of mounts.splice(0)) {
    spawnSync('mount', ['-o', 'remount,rw', m])
    spawnSync('umount', [m])
    fs.rmSync(m, { recursive: true, force: true })
  }
  removeTmpDirs()
})

// ------------------------------------------------------------------------------------ the truth

interface Truth {
  timelines: unknown[]
  log: string[]
  refs: string[]
  seeks: string[]
  /** CID -> part ('region:ram', 'blob:cpu', ...) -> digest of its restored bytes */
  content: Record<string, Record<string, string>>
}

/** where seek() is asked (set once the history is known) */
let seekPoints: [string, bigint][] = []

/** a digest for equality (native: the test hashes tens of MiB per capture) */
const digest = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')

async function capture(store: CkptStore): Promise<Truth> {
  const timelines = (await store.listTimelines()).sort((a, b) => (a.name < b.name ? -1 : 1))
  const log: string[] = []
  for await (const e of store.log()) log.push(`${e.timeline}@${e.vtime} ${e.cid}`)
  const refs: string[] = []
  for await (const r of store.refs()) refs.push(`${r.name} ${r.cid}`)
  const seeks: string[] = []
  for (const [t, v] of seekPoints) {
    const e = await store.seek(t, v)
    seeks.push(`${t}@${v} -> ${e ? `${e.timeline}@${e.vtime} ${e.cid}` : 'none'}`)
  }
  const cids = new Set([...log.map((l) => l.split(' ')[1]!), ...refs.map((l) => l.split(' ')[1]!)])
  const content: Truth['content'] = {}
  for (const cid of [...cids].sort()) content[cid] = await partsOf(store, cid)
  return { timelines: JSON.parse(JSON.stringify(timelines)), log, refs, seeks, content }
}

async function partsOf(store: CkptStore, cid: string): Promise<Record<string, string>> {
  const m = await store.manifest(cid)
  const out: Record<string, string> = { meta: JSON.stringify(m.meta) }
  for (const name of Object.keys(m.regions).sort()) {
    const buf = new Uint8Array(m.regions[name]!.size)
    await store.restore(cid, name, buf)
    out[`region:${name}`] = digest(buf)
  }
  for (const name of Object.keys(m.blobs).sort()) out[`blob:${name}`] = digest(await store.readBlob(cid, name))
  return out
}

function countRestores(t: Truth): number {
  return Object.values(t.content).reduce((n, parts) => n + Object.keys(parts).filter((k) => k !== 'meta').length, 0)
}

// ------------------------------------------------------------------------------------ building the store

function mutate(rng: Rng, buf: Uint8Array, chunk: number, n: number): number[] {
  const dirty = new Set<number>()
  for (let k = 0; k < n; k++) {
    const i = rng.int(0, buf.length / chunk)
    if (rng.chance(0.2)) buf.fill(0, i * chunk, (i + 1) * chunk)
    else if (rng.chance(0.3)) buf.fill(rng.int(1, 256), i * chunk, (i + 1) * chunk)
    else buf.set(rng.bytes(chunk), i * chunk)
    dirty.add(i)
  }
  return [...dirty]
}

async function buildBase(dir: string): Promise<{ gcRecordsDropped: number }> {
  const rng = makeRng(10_10)
  const store = await openStore(dir, { packTargetSize: 256 * 1024, threads: 0 })
  let gcRecordsDropped = 0
  try {
    const ram = new Uint8Array(REGIONS.ram.size)
    const disk = new Uint8Array(REGIONS.disk.size)
    mutate(rng, ram, PAGE, 40)
    mutate(rng, disk, 16384, 20)
    const vm = await store.timeline('vm', { regions: REGIONS })
    const roll = new Uint8Array(ROLLING.ram.size)
    mutate(rng, roll, PAGE, 20)
    const rolling = await store.timeline('rolling', { regions: ROLLING, policy: '2000@6000,last=2' })
    let branch: Awaited<ReturnType<CkptStore['timeline']>> | undefined
    let branchRam: Uint8Array | undefined
    let branchDisk: Uint8Array | undefined
    let bv = 0
    let rv = 0
    const vmStep = async (k: number) => {
      const regions: Record<string, { data: Uint8Array; dirty?: number[] }> =
        k === 0 ? { ram: { data: ram }, disk: { data: disk } } : { ram: { data: ram, dirty: mutate(rng, ram, PAGE, rng.int(2, 8)) } }
      if (k > 0 && rng.chance(0.3)) regions.disk = { data: disk, dirty: mutate(rng, disk, 16384, rng.int(1, 3)) }
      const meta: Record<string, string> = k % 7 === 0 ? { label: `milestone-${k}` } : { step: String(k), note: k % 2 ? 'odd' : 'even' }
      await vm.checkpoint({ vtime: k * 1000, regions, blobs: k % 3 === 0 ? { cpu: rng.bytes(rng.int(10, 3000)), dev: rng.bytes(rng.int(0, 200)) } : undefined, meta })
    }
    const branchStep = async () => {
      bv += 500
      await branch!.checkpoint({
        vtime: bv,
        regions: { ram: { data: branchRam!, dirty: mutate(rng, branchRam!, PAGE, rng.int(1, 6)) }, ...(rng.chance(0.5) ? { disk: { data: branchDisk!, dirty: mutate(rng, branchDisk!, 16384, 1) } } : {}) },
        blobs: { cpu: rng.bytes(rng.int(10, 500)) },
        meta: { on: 'branch' },
      })
    }
    const rollingStep = async () => {
      rv += 700
      await rolling.checkpoint({ vtime: rv, regions: { ram: { data: roll, dirty: mutate(rng, roll, PAGE, rng.int(1, 5)) } } })
    }
    for (let k = 0; k <= 14; k++) {
      await vmStep(k)
      if (k % 2 === 0) await rollingStep()
      if (k === 10) {
        // a branch from vm@10000, its buffers a copy of vm's at that point
        await store.fork('vm/branch', 'vm@10000')
        branch = await store.timeline('vm/branch')
        branchRam = ram.slice()
        branchDisk = disk.slice()
        bv = 10_000
      }
      if (k > 10) await branchStep()
    }
    await store.setRef('golden', 'vm@3000')
    await store.setRef('scratch', 'rolling')
    await store.setRef('golden', 'vm@9000') // moved
    await store.setRef('branch-tip', 'vm/branch')
    await store.deleteRef('scratch')
    await store.thin('vm', '3000@inf,last=3')
    const branchLog: bigint[] = []
    for await (const e of store.log('vm/branch')) branchLog.push(e.vtime)
    await store.rm([`vm/branch@${branchLog[1]}`])
    await store.setPolicy('vm/branch', '1000@inf,last=20')
    // gc in the middle: a snapshot, older records dropped with the packs it rewrites
    const g = await store.gc({ threshold: 1 })
    gcRecordsDropped = g.recordsDropped
    for (let k = 15; k <= 26; k++) {
      await vmStep(k)
      if (k % 2 === 0) await rollingStep()
      if (k % 3 === 0) await branchStep()
    }
    await store.setRef('late', 'vm@20000')
    await store.setRef('golden', 'vm@21000') // moved again
    await store.rm(['vm@16000'])
    await store.setPolicy('vm/branch', null)
    await store.fork('rolling/replay', 'rolling')
  } finally {
    await store.close()
  }
  return { gcRecordsDropped }
}

beforeAll(async () => {
  base = path.join(tmpDir('ckpt-loss-base-'), 'store')
  const { gcRecordsDropped } = await buildBase(base)
  // LevelDB writes its log out as .ldb tables at open: reopen a few times so the index has some
  for (let k = 0; k < 3; k++) await (await openStore(base, { threads: 0, mustExist: true })).close()
  const store = await openStore(base, { threads: 0, mustExist: true, readOnly: true })
  try {
    const log: { timeline: string; vtime: bigint }[] = []
    for await (const e of store.log()) log.push(e)
    seekPoints = [
      ['vm', 0n],
      ['vm', 5500n],
      ['vm', 16500n],
      ['vm', 1n << 40n],
      ['vm/branch', 10_999n],
      ['vm/branch', 12_600n],
      ['rolling', 4000n],
      ['rolling', 1n << 40n],
      ['rolling/replay', 1n << 40n],
      ['nowhere', 5n],
    ]
    truth = await capture(store)
  } finally {
    await store.close()
  }
  // a quiescent index: a close can cut LevelDB's background compaction short and leave its unfinished
  // output in the directory, a table no version lists (the next open deletes it); (d) must delete a
  // table the index needs, so the base holds only those: one full compaction, run to its end
  const { Level } = await import('level')
  const db = new Level<Uint8Array, Uint8Array>(path.join(base, 'index'), { keyEncoding: 'view', valueEncoding: 'view' })
  await db.open()
  await (db as unknown as { compactRange(a: Uint8Array, b: Uint8Array): Promise<void> }).compactRange(new Uint8Array([0]), new Uint8Array([0xff, 0xff]))
  const live = new Set([...db.getProperty('leveldb.sstables').matchAll(/^ (\d+):/gm)].map((m) => Number(m[1])))
  await db.close()
  const tables = fs.readdirSync(path.join(base, 'index')).filter((f) => f.endsWith('.ldb'))
  expect(tables.filter((f) => !live.has(Number(f.slice(0, -4))))).toEqual([])
  // the history the matrix needs is there
  const packs = fs.readdirSync(path.join(base, 'packs')).filter((f) => f.endsWith('.pack'))
  expect(packs.length).toBeGreaterThanOrEqual(4)
  expect(gcRecordsDropped).toBeGreaterThan(0)
  expect(truth.timelines.length).toBe(4)
  expect(truth.refs.length).toBe(3)
  expect(fs.readdirSync(path.join(base, 'index')).filter((f) => f.endsWith('.ldb')).length).toBeGreaterThanOrEqual(1)
  const tl = truth.timelines as { name: string; policy?: string; forkedFrom?: unknown }[]
  expect(tl.find((t) => t.name === 'rolling')?.policy).toBeDefined()
  expect(tl.find((t) => t.name === 'vm/branch')?.forkedFrom).toBeDefined()
  console.log(`index-loss base store: ${truth.log.length} checkpoints in ${truth.timelines.length} timelines, ${truth.refs.length} refs, ${packs.length} packs, ${countRestores(truth)} restorable parts; gc dropped ${gcRecordsDropped} records`)
}, 120_000)

// ------------------------------------------------------------------------------------ helpers

function freshCopy(prefix: string, parent?: string): string {
  const dir = path.join(parent ?? tmpDir(prefix), 'store')
  fs.cpSync(base, dir, { recursive: true })
  return dir
}

interface Run {
  status: number | null
  stdout: string
  stderr: string
}

function cliEnv(): NodeJS.ProcessEnv {
  const e = { ...process.env }
  delete e.CKPT_STORE
  return e
}

function ckpt(args: string[], opts: { nobody?: boolean } = {}): Run {
  const cmd = opts.nobody ? 'setpriv' : process.execPath
  const argv = opts.nobody ? ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, CLI, ...args] : [CLI, ...args]
  const r = spawnSync(cmd, argv, { env: cliEnv(), maxBuffer: 64 << 20 })
  if (r.error) throw r.error
  return { status: r.status, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8') }
}

function expectCliError(r: Run, status: number, code: string): void {
  expect(r.status, r.stderr).toBe(status)
  expect(r.stderr).toContain(`ckpt: ${code}:`)
}

/** Every path under dir with its size and mtime: what a command that writes nothing leaves as it was. */
function listing(dir: string): string[] {
  const out: string[] = []
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name)
      const st = fs.lstatSync(p)
      out.push(`${path.relative(dir, p)}${e.isDirectory() ? '/' : ''} ${e.isDirectory() ? '' : st.size} ${st.mtimeMs}`)
      if (e.isDirectory()) walk(p)
    }
  }
  walk(dir)
  return out.sort()
}

function packFiles(dir: string): string[] {
  const d = path.join(dir, 'packs')
  return fs
    .readdirSync(d, { withFileTypes: true })
    .map((e) => `${e.name}${e.isDirectory() ? '/' : ` ${fs.statSync(path.join(d, e.name)).size}`}`)
    .sort()
}

function brokenIndexes(dir: string): string[] {
  return fs.readdirSync(dir).filter((f) => f.startsWith('index.broken-'))
}


const problems = (fs_: Finding[]) => fs_.filter((f) => f.severity !== 'info').map((f) => `${f.severity} ${f.kind}: ${f.message}`)

/** A reader (readOnly) sees the whole truth; returns the open notes' kinds. */
async function expectReaderSeesTruth(dir: string): Promise<string[]> {
  const store = await openStore(dir, { threads: 0, mustExist: true, readOnly: true })
  try {
    expect(await capture(store)).toEqual(truth)
    return store.openNotes.map((n) => n.kind)
  } finally {
    await store.close()
  }
}

/**
 * After the recovery: the whole truth is back; verify --deep is clean; a gc runs (no
 * CKPT_CATALOG_SUSPECT) and loses nothing (the truth again, in this process and in the next).
 */
async function expectRecovered(dir: string, label: string): Promise<void> {
  const store = await openStore(dir, { threads: 0, mustExist: true })
  let gcLine = ''
  try {
    expect(await capture(store)).toEqual(truth)
    const v = await runVerify(store, { deep: true })
    expect(problems(v.findings)).toEqual([])
    expect(v.summary.clean).toBe(true)
    expect(v.summary.checkpoints).toBe(new Set(truth.log.map((l) => l.split(' ')[1])).size)
    const g = await store.gc()
    gcLine = `gc: ${g.packsDeleted} packs deleted, ${g.packsRewritten} rewritten`
    expect(await capture(store)).toEqual(truth)
  } finally {
    await store.close()
  }
  const again = await openStore(dir, { threads: 0, mustExist: true })
  try {
    expect(again.openNotes.map((n) => n.kind)).toEqual([])
    expect(await capture(again)).toEqual(truth)
    const v = await runVerify(again)
    expect(problems(v.findings)).toEqual([])
  } finally {
    await again.close()
  }
  console.log(
    `index-loss ${label}: ${truth.log.length}/${truth.log.length} checkpoints, ${truth.timelines.length}/${truth.timelines.length} timelines, ${truth.refs.length}/${truth.refs.length} refs back; ${countRestores(truth)} parts restore byte-identical; verify --deep clean; ${gcLine}, nothing lost`,
  )
}

async function writerFails(dir: string, code: string): Promise<Record<string, unknown>> {
  try {
    const s = await openStore(dir, { threads: 0, mustExist: true })
    await s.close()
  } catch (err) {
    const e = err as { code?: string; details?: Record<string, unknown> }
    expect(e.code).toBe(code)
    return e.details ?? {}
  }
  throw new Error(`a writer opened ${dir}; expected ${code}`)
}

/** Some ref of the truth and its restored region, for the CLI's restore. */
function someCheckpoint(): { cid: string; ram: string } {
  const line = truth.log[truth.log.length - 1]!
  const cid = line.split(' ')[1]!
  return { cid, ram: truth.content[cid]!['region:ram']! }
}

const fileDigest = (file: string) => digest(fs.readFileSync(file))

/** The read-only CLI commands work from the packs alone and see the truth. */
function expectCliReaders(dir: string, outDir: string, opts: { nobody?: boolean } = {}): void {
  const log = ckpt(['log', '--store', dir, '--json'], opts)
  expect(log.status, log.stderr).toBe(0)
  const lines = log.stdout.trim().split('\n').map((l) => JSON.parse(l) as { timeline: string; vtime: string; cid: string })
  expect(lines.map((l) => `${l.timeline}@${l.vtime} ${l.cid}`)).toEqual(truth.log)
  expect(log.stderr).toContain('ckpt: note:')
  const { cid, ram } = someCheckpoint()
  const show = ckpt(['show', '--store', dir, cid, '--json'], opts)
  expect(show.status, show.stderr).toBe(0)
  expect(JSON.parse(show.stdout).cid).toBe(cid)
  const out = path.join(outDir, `ram-${Date.now()}.bin`)
  const restore = ckpt(['restore', '--store', dir, cid, '--region', 'ram', '--out', out], opts)
  expect(restore.status, restore.stderr).toBe(0)
  expect(fileDigest(out)).toBe(ram)
  const verify = ckpt(['verify', '--store', dir, '--deep', '--json'], opts)
  const summary = JSON.parse(verify.stdout.trim().split('\n').pop()!).summary as VerifySummary
  expect(summary.errors + summary.warnings, verify.stdout).toBe(0)
  expect(summary.checkpoints).toBe(new Set(truth.log.map((l) => l.split(' ')[1])).size)
  expect(verify.status, verify.stderr).toBe(0)
  const bundle = path.join(outDir, `all-${Date.now()}.car`)
  const exp = ckpt(['export', '--store', dir, 'vm', 'vm/branch', '--out', bundle], opts)
  expect(exp.status, exp.stderr).toBe(0)
  expect(fs.statSync(bundle).size).toBeGreaterThan(1000)
}

function mountLossTmpfs(sizeMiB: number): string | undefined {
  const mnt = mountTmpfs(`${sizeMiB}m`, 'ckpt-loss-mnt-')
  if (mnt) mounts.push(mnt)
  return mnt
}

function unmount(mnt: string): void {
  unmountTmpfs(mnt)
  mounts.splice(mounts.indexOf(mnt), 1)
}

// ------------------------------------------------------------------------------------ the matrix

describe('index-loss matrix: everything comes back after the documented recovery', () => {
  it('(a) index/CURRENT deleted: readers read the packs alone; the next writer rebuilds', async () => {
    const dir = freshCopy('ckpt-loss-a-')
    fs.rmSync(path.join(dir, 'index', 'CURRENT'))
    expect(await expectReaderSeesTruth(dir)).toContain('packs-alone')
    const w = await openStore(dir, { threads: 0, mustExist: true })
    const kinds = w.openNotes.map((n) => n.kind)
    await w.close()
    expect(kinds).toContain('index-rebuilt')
    await expectRecovered(dir, '(a) CURRENT deleted')
  })

  it('(b) index/ deleted: readers read the packs alone; the next writer rebuilds', async () => {
    const dir = freshCopy('ckpt-loss-b-')
    fs.rmSync(path.join(dir, 'index'), { recursive: true })
    expect(await expectReaderSeesTruth(dir)).toContain('packs-alone')
    const w = await openStore(dir, { threads: 0, mustExist: true })
    const kinds = w.openNotes.map((n) => n.kind)
    await w.close()
    expect(kinds).toContain('index-rebuilt')
    await expectRecovered(dir, '(b) index/ deleted')
  })

  it('(c) index emptied (a fresh empty LevelDB in its place): the next writer rebuilds', async () => {
    const dir = freshCopy('ckpt-loss-c-')
    const indexDir = path.join(dir, 'index')
    fs.rmSync(indexDir, { recursive: true })
    const { Level } = await import('level')
    const db = new Level(indexDir)
    await db.open()
    await db.close()
    expect(await expectReaderSeesTruth(dir)).toContain('packs-alone')
    const w = await openStore(dir, { threads: 0, mustExist: true })
    const kinds = w.openNotes.map((n) => n.kind)
    await w.close()
    // (the reason it gives, empty or stale, is the open's own business)
    expect(kinds).toContain('index-rebuilt')
    await expectRecovered(dir, '(c) index emptied')
  })

  it('(d) one .ldb file deleted: writers get CKPT_BAD_INDEX with the advice, readers read the packs; repair --rebuild-index', async () => {
    const dir = freshCopy('ckpt-loss-d-')
    const indexDir = path.join(dir, 'index')
    const ldb = fs.readdirSync(indexDir).filter((f) => f.endsWith('.ldb'))
    expect(ldb.length).toBeGreaterThanOrEqual(1)
    // the largest table: the one holding most of the index
    const victim = ldb.sort((a, b) => fs.statSync(path.join(indexDir, b)).size - fs.statSync(path.join(indexDir, a)).size)[0]!
    fs.rmSync(path.join(indexDir, victim))
    await expectDamagedThenRepaired(dir, `(d) ${victim} deleted`)
  })

  it('(e) the LevelDB MANIFEST damaged: writers get CKPT_BAD_INDEX, readers read the packs; repair --rebuild-index', async () => {
    const dir = freshCopy('ckpt-loss-e-')
    const indexDir = path.join(dir, 'index')
    const manifest = fs.readdirSync(indexDir).find((f) => f.startsWith('MANIFEST-'))!
    const file = path.join(indexDir, manifest)
    const fd = fs.openSync(file, 'r+')
    fs.writeSync(fd, Buffer.alloc(Math.min(64, fs.statSync(file).size - 8), 0xa5), 0, undefined, 8)
    fs.closeSync(fd)
    await expectDamagedThenRepaired(dir, '(e) MANIFEST damaged')
  })

  it('(f) a full disk: writers get CKPT_NO_SPACE (exit 3), nothing set aside, readers read the packs; fine once space is freed', async (ctx) => {
    if (!isRoot) {
      console.warn('index-loss (f) skipped: mounting a tmpfs needs root')
      return ctx.skip()
    }
    const sizeMiB = Math.ceil(dirBytes(base) / (1 << 20)) + 3
    const mnt = mountLossTmpfs(sizeMiB)
    if (!mnt) {
      console.warn('index-loss (f) skipped: cannot mount a tmpfs')
      return ctx.skip()
    }
    try {
      const dir = path.join(mnt, 'store')
      fs.cpSync(base, dir, { recursive: true })
      // fill the disk to the last byte
      const fill = path.join(mnt, 'fill')
      const fd = fs.openSync(fill, 'w')
      let filled = 0
      for (const step of [1 << 20, 4096, 512, 1]) {
        const buf = Buffer.alloc(step, 1)
        for (;;) {
          try {
            const n = fs.writeSync(fd, buf)
            filled += n
            if (n < step) break
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
            break
          }
        }
      }
      fs.closeSync(fd)
      expect(() => fs.writeFileSync(path.join(mnt, 'probe'), 'x')).toThrow(/ENOSPC/)
      fs.rmSync(path.join(mnt, 'probe'), { force: true })
      const outDir = tmpDir('ckpt-loss-f-out-')
      // a writer: the disk is full, not the index damaged
      const details = await writerFails(dir, 'CKPT_NO_SPACE')
      expect(String(details.advice ?? '')).toMatch(/free space/)
      const input = path.join(outDir, 'ram.in')
      fs.writeFileSync(input, Buffer.alloc(REGIONS.ram.size, 7))
      expectCliError(ckpt(['add', '--store', dir, '--timeline', 'vm', '--vtime', '99000', `ram=${input}`]), 3, 'CKPT_NO_SPACE')
      expect(brokenIndexes(dir)).toEqual([])
      // an explicit rebuild fails the same way and sets nothing aside
      const before = listing(path.join(dir, 'packs'))
      const rep = ckpt(['repair', '--store', dir, '--rebuild-index'])
      expect(rep.status, rep.stderr).not.toBe(0)
      expect(rep.stderr).toContain('ckpt: CKPT_NO_SPACE:')
      expect(brokenIndexes(dir)).toEqual([])
      expect(fs.existsSync(path.join(dir, 'index', 'CURRENT'))).toBe(true)
      expect(listing(path.join(dir, 'packs'))).toEqual(before)
      // readers still work, from the packs
      const log = ckpt(['log', '--store', dir])
      expect(log.status, log.stderr).toBe(0)
      expect(log.stdout.trim().split('\n').map((l) => l.split(' ').slice(0, 2).join(' '))).toEqual(truth.log)
      const { cid, ram } = someCheckpoint()
      const out = path.join(outDir, 'ram.bin')
      const restore = ckpt(['restore', '--store', dir, cid, '--region', 'ram', '--out', out])
      expect(restore.status, restore.stderr).toBe(0)
      expect(fileDigest(out)).toBe(ram)
      expect(await expectReaderSeesTruth(dir)).toContain('packs-alone')
      // space again: nothing to do but reopen
      fs.rmSync(fill)
      console.log(`index-loss (f): filled ${(filled / (1 << 20)).toFixed(1)} MiB of a ${sizeMiB} MiB tmpfs; writer CKPT_NO_SPACE (CLI exit 3), repair CKPT_NO_SPACE (exit ${rep.status}), nothing set aside, readers from the packs`)
      await expectRecovered(dir, '(f) full disk, then freed')
      expect(brokenIndexes(dir)).toEqual([])
    } finally {
      unmount(mnt)
    }
  })

  it('(g) a read-only medium: readers work, writers get CKPT_READ_ONLY, nothing written; fine once writable', async (ctx) => {
    if (!isRoot) {
      console.warn('index-loss (g) skipped: mounting a tmpfs needs root')
      return ctx.skip()
    }
    const mnt = mountLossTmpfs(Math.ceil(dirBytes(base) / (1 << 20)) + 4)
    if (!mnt) {
      console.warn('index-loss (g) skipped: cannot mount a tmpfs')
      return ctx.skip()
    }
    try {
      const dir = path.join(mnt, 'store')
      fs.cpSync(base, dir, { recursive: true })
      execFileSync('mount', ['-o', 'remount,ro', mnt])
      const before = listing(dir)
      const outDir = tmpDir('ckpt-loss-g-out-')
      const input = path.join(outDir, 'ram.in')
      fs.writeFileSync(input, Buffer.alloc(REGIONS.ram.size, 7))
      const details = await writerFails(dir, 'CKPT_READ_ONLY')
      expect(String(details.advice ?? '')).toMatch(/read-only/)
      expectCliError(ckpt(['add', '--store', dir, '--timeline', 'vm', '--vtime', '99000', `ram=${input}`]), 3, 'CKPT_READ_ONLY')
      expectCliError(ckpt(['ref', '--store', dir, 'x', 'vm']), 3, 'CKPT_READ_ONLY')
      const rep = ckpt(['repair', '--store', dir, '--rebuild-index'])
      expect(rep.status).not.toBe(0)
      expect(rep.stderr).toContain('ckpt: CKPT_READ_ONLY:')
      const notes = await expectReaderSeesTruth(dir)
      expect(notes).toContain('packs-alone')
      expectCliReaders(dir, outDir)
      expect(listing(dir)).toEqual(before)
      execFileSync('mount', ['-o', 'remount,rw', mnt])
      console.log('index-loss (g): writer CKPT_READ_ONLY (CLI exit 3), log/show/restore/verify --deep/export from the packs, nothing written')
      await expectRecovered(dir, '(g) read-only medium, then writable')
      expect(brokenIndexes(dir)).toEqual([])
    } finally {
      unmount(mnt)
    }
  })

  it('(h) another user: log/show/restore/verify/export work, add gets CKPT_PERMISSION, nothing written', async (ctx) => {
    if (!canSetpriv) {
      console.warn('index-loss (h) skipped: needs root and setpriv to run as another user')
      return ctx.skip()
    }
    const parent = tmpDir('ckpt-loss-h-')
    fs.chmodSync(parent, 0o755)
    const dir = freshCopy('', parent)
    execFileSync('chmod', ['-R', 'go-w,go+rX', dir])
    const outDir = path.join(parent, 'out')
    fs.mkdirSync(outDir)
    fs.chmodSync(outDir, 0o777)
    const input = path.join(outDir, 'ram.in')
    fs.writeFileSync(input, Buffer.alloc(REGIONS.ram.size, 7), { mode: 0o644 })
    const before = listing(dir)
    expectCliReaders(dir, outDir, { nobody: true })
    expectCliError(ckpt(['add', '--store', dir, '--timeline', 'vm', '--vtime', '99000', `ram=${input}`], { nobody: true }), 3, 'CKPT_PERMISSION')
    expectCliError(ckpt(['gc', '--store', dir], { nobody: true }), 3, 'CKPT_PERMISSION')
    expect(listing(dir)).toEqual(before)
    console.log('index-loss (h): as uid 65534 log/show/restore/verify --deep/export work from the packs, add and gc CKPT_PERMISSION (exit 3), nothing written')
    await expectRecovered(dir, '(h) another user')
  })
})

/** (d), (e): a damaged index: writers refuse with the advice, readers read the packs, the repair rebuilds. */
async function expectDamagedThenRepaired(dir: string, label: string): Promise<void> {
  const details = await writerFails(dir, 'CKPT_BAD_INDEX')
  expect(details.advice).toBe(`ckpt repair --store ${dir} --rebuild-index`)
  const add = ckpt(['ref', '--store', dir, 'x', 'vm'])
  expectCliError(add, 3, 'CKPT_BAD_INDEX')
  expect(add.stderr).toContain(`ckpt repair --store ${dir} --rebuild-index`)
  expect(await expectReaderSeesTruth(dir)).toContain('packs-alone')
  const rep = ckpt(['repair', '--store', dir, '--rebuild-index'])
  expect(rep.status, rep.stdout + rep.stderr).toBe(0)
  expect(rep.stdout).toContain('the store is clean')
  await expectRecovered(dir, label)
}

// ------------------------------------------------------------------------------------ readers write nothing

describe('read-only commands on a store whose index is gone change no file in it', () => {
  for (const [what, lose] of [
    ['index/CURRENT deleted', (dir: string) => fs.rmSync(path.join(dir, 'index', 'CURRENT'))],
    ['index/ deleted', (dir: string) => fs.rmSync(path.join(dir, 'index'), { recursive: true })],
  ] as const) {
    it(what, () => {
      const dir = freshCopy('ckpt-loss-ro-')
      lose(dir)
      const outDir = tmpDir('ckpt-loss-ro-out-')
      const { cid } = someCheckpoint()
      const changed: string[] = []
      for (const args of [
        ['log', '--store', dir],
        ['show', '--store', dir, cid],
        ['verify', '--store', dir],
        ['verify', '--store', dir, '--deep'],
        ['export', '--store', dir, 'vm', '--out', path.join(outDir, 'b.car')],
      ]) {
        const before = listing(dir)
        const r = ckpt(args)
        expect(r.status === 0 || (args[0] === 'verify' && r.status === 1), `${args[0]}: ${r.stderr}`).toBe(true)
        const after = listing(dir)
        if (JSON.stringify(after) !== JSON.stringify(before)) {
          changed.push(`ckpt ${args[0]}: ${[...after.filter((l) => !before.includes(l)).map((l) => `+${l}`), ...before.filter((l) => !after.includes(l)).map((l) => `-${l}`)].join(', ')}`)
        }
      }
      console.log(`index-loss readers with ${what}: ${5 - changed.length}/5 commands left the store as it was${changed.length ? `; changed: ${changed.join(' | ')}` : ''}`)
      expect(changed).toEqual([])
    })
  }
})

// ------------------------------------------------------------------------------------ gc refuses

describe('gc on an index that lost its catalog but not its records', () => {
  it('refuses with CKPT_CATALOG_SUSPECT and deletes no pack; repair --rebuild-index brings the catalog back', async () => {
    const dir = freshCopy('ckpt-loss-suspect-')
    const kv = await LevelKV.open(path.join(dir, 'index'))
    let deleted = 0
    try {
      const ops: { type: 'del'; key: Uint8Array }[] = []
      for await (const [k] of kv.iterate({})) {
        if ([0x74, 0x63, 0x6b, 0x72].includes(k[0]!)) ops.push({ type: 'del', key: Uint8Array.prototype.slice.call(k) })
      }
      deleted = ops.length
      await kv.batch(ops, { sync: true })
    } finally {
      await kv.close()
    }
    expect(deleted).toBeGreaterThan(truth.log.length)
    const before = packFiles(dir)
    const gc = ckpt(['gc', '--store', dir, '--threshold', '100', '--json'])
    expect(gc.status, gc.stderr).not.toBe(0)
    expect(JSON.parse(gc.stdout).error.code).toBe('CKPT_CATALOG_SUSPECT')
    expect(packFiles(dir)).toEqual(before)
    // the library says the same, with the advice
    const store = await openStore(dir, { threads: 0, mustExist: true })
    try {
      let code: string | undefined
      let advice: unknown
      try {
        await store.gc({ threshold: 1 })
      } catch (err) {
        code = (err as { code?: string }).code
        advice = (err as { details?: { advice?: unknown } }).details?.advice
      }
      expect(code).toBe('CKPT_CATALOG_SUSPECT')
      expect(String(advice)).toContain('--rebuild-index')
    } finally {
      await store.close()
    }
    expect(packFiles(dir)).toEqual(before)
    const rep = ckpt(['repair', '--store', dir, '--rebuild-index'])
    expect(rep.status, rep.stdout + rep.stderr).toBe(0)
    console.log(`index-loss catalog keys deleted (${deleted} keys): ckpt gc exit ${gc.status} CKPT_CATALOG_SUSPECT, ${before.length} pack files untouched; repair --rebuild-index restored it`)
    await expectRecovered(dir, 'catalog keys deleted')
  })
})
