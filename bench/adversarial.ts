/**
 * `npm run bench:adversarial`: the store as a hostile user and a clumsy operator would treat it, with
 * trials and outcomes per attack (issue 10's figures). Each trial works on a fresh copy of one base
 * store (3 timelines, a fork, refs, a thin, a gc, blobs; several packs):
 *
 *   byte flips     one random byte of a random pack flipped: verify --deep must find it and name
 *                  exactly the checkpoints whose reads fail; no read returns wrong bytes
 *   forged payload a chunk's payload changed and its CRC-32 recomputed (only re-hashing can tell):
 *                  deep verify names every checkpoint reaching it
 *   index loss     CURRENT deleted, index/ deleted, index emptied, one .ldb deleted, MANIFEST damaged:
 *                  after the documented recovery every checkpoint, timeline and ref is back and reads
 *                  back byte-identical
 *   two writers    a second writer gets CKPT_LOCKED naming the holder's pid
 *
 * (kill -9 at random moments and hostile bundles are in the test suite: test/src/crash-catalog,
 * crash-ops and import-fuzz print their own tallies.) Results: bench/results/adversarial.md.
 */
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { crc32 } from 'node:zlib'
import { Level } from 'level'
import { blake3 } from '../codecs/index.js'
import { isCkptError, openStore, repairStore, verifyStore, type CkptStore } from '../src/index.js'
import { ENTRY_KIND, scanPackFile } from '../store/index.js'
import { table } from './stats.js'

const FLIPS = Number(process.env.ADV_FLIPS ?? 50)
const FORGED = Number(process.env.ADV_FORGED ?? 20)
const root = fs.mkdtempSync(path.join(process.env.BENCH_DIR ?? os.tmpdir(), 'ckpt-adv-'))
const base = path.join(root, 'base')
let seed = 0x5eed
const rand = (n: number) => {
  seed = (seed * 1103515245 + 12345) >>> 0
  return seed % n
}

// ------------------------------------------------------------------------------------ the base store
{
  const store = await openStore(base, { packTargetSize: 64 << 10, threads: 0 })
  const ram = Buffer.alloc(256 << 10)
  const disk = Buffer.alloc(512 << 10)
  for (let i = 0; i < ram.length; i += 4096) if (rand(3)) ram.set(randomBytes(rand(2) ? 4096 : 1024), i)
  for (let i = 0; i < disk.length; i += 65536) disk.fill(i / 65536 + 1, i, i + 4096)
  const a = await store.timeline('vm/a', { regions: { ram: { size: ram.length }, disk: { size: disk.length, chunkSize: 65536 } } })
  for (let k = 0; k < 24; k++) {
    const pages = [rand(64), rand(64), rand(64)]
    for (const p of pages) ram.set(randomBytes(4096), p * 4096)
    await a.checkpoint({ vtime: k * 1000, regions: { ram: { data: ram, dirty: k ? pages : undefined }, disk: { data: disk } }, blobs: k % 6 === 0 ? { cpu: Buffer.from(`cpu ${k}`) } : undefined, meta: k === 3 ? { label: 'boot' } : undefined })
  }
  await store.setRef('boot', 'vm/a@3000')
  await store.fork('vm/b', 'vm/a@12000')
  const b = await store.timeline('vm/b')
  for (let k = 13; k < 20; k++) {
    const p = rand(64)
    ram.set(randomBytes(2048), p * 4096)
    await b.checkpoint({ vtime: k * 1000, regions: { ram: { data: ram, dirty: [p] } } })
  }
  await store.thin('vm/a', 'last=16')
  await store.gc({ threshold: 0.3 })
  await store.setRef('tip', 'vm/b')
  await store.close()
}

interface Truth {
  log: string
  refs: string
  timelines: string
  reads: Map<string, string>
}

async function truthOf(store: CkptStore): Promise<Truth> {
  const reads = new Map<string, string>()
  const log: string[] = []
  for await (const e of store.log()) {
    log.push(`${e.timeline}@${e.vtime} ${e.cid}`)
    reads.set(e.cid.toString(), await readAll(store, e.cid.toString()))
  }
  const refs: string[] = []
  for await (const r of store.refs()) refs.push(`${r.name} ${r.cid}`)
  const timelines = JSON.stringify((await store.listTimelines()).map((t) => [t.name, t.lineage, t.regions, t.policy ?? null, t.forkedFrom ?? null]))
  return { log: log.join('\n'), refs: refs.join('\n'), timelines, reads }
}

/** A digest of every region and blob of a checkpoint, or the CKPT_* code reading it failed with. */
async function readAll(store: CkptStore, cid: string): Promise<string> {
  try {
    const m = await store.manifest(cid)
    const h: Uint8Array[] = []
    for (const [name, r] of Object.entries(m.regions)) {
      const out = new Uint8Array(r.size)
      await store.restore(cid, name, out)
      h.push(blake3(out))
    }
    for (const name of Object.keys(m.blobs)) h.push(blake3(await store.readBlob(cid, name)))
    return Buffer.from(blake3(Buffer.concat(h))).toString('hex')
  } catch (err) {
    if (isCkptError(err)) return `error ${err.code}`
    throw err
  }
}

const truth = await (async () => {
  const s = await openStore(base, { threads: 0, readOnly: true })
  try {
    return await truthOf(s)
  } finally {
    await s.close()
  }
})()
const checkpoints = truth.reads.size
const packs = fs.readdirSync(path.join(base, 'packs')).filter((f) => f.endsWith('.pack'))
let trialNo = 0
const fresh = () => {
  const dir = path.join(root, `t${++trialNo}`)
  fs.cpSync(base, dir, { recursive: true })
  return dir
}

async function deepVerify(dir: string): Promise<{ damaged: Set<string>; findings: number; clean: boolean }> {
  const s = await openStore(dir, { threads: 0, readOnly: true })
  try {
    const it = verifyStore(s, { deep: true })
    let findings = 0
    let r = await it.next()
    for (; !r.done; r = await it.next()) if (r.value.severity !== 'info') findings++
    return { damaged: new Set(r.value.damagedCheckpoints.map((c) => c.cid)), findings, clean: r.value.clean }
  } finally {
    await s.close()
  }
}

/** Every checkpoint read back: how many fail (with a CKPT_* code), how many return wrong bytes. */
async function readBack(dir: string): Promise<{ failed: Set<string>; wrong: number }> {
  const s = await openStore(dir, { threads: 0, readOnly: true })
  const failed = new Set<string>()
  let wrong = 0
  try {
    for (const [cid, want] of truth.reads) {
      const got = await readAll(s, cid)
      if (got.startsWith('error ')) failed.add(cid)
      else if (got !== want) wrong++
    }
  } finally {
    await s.close()
  }
  return { failed, wrong }
}

const rows: string[][] = [['attack', 'trials', 'outcome']]

// ------------------------------------------------------------------------------------ byte flips
{
  let found = 0
  let named = 0
  let harmless = 0
  let wrong = 0
  let failedReads = 0
  for (let t = 0; t < FLIPS; t++) {
    const dir = fresh()
    const f = path.join(dir, 'packs', packs[rand(packs.length)]!)
    const b = fs.readFileSync(f)
    const at = 16 + rand(b.length - 16)
    b[at]! ^= 1 << rand(8)
    fs.writeFileSync(f, b)
    const v = await deepVerify(dir)
    const r = await readBack(dir)
    wrong += r.wrong
    failedReads += r.failed.size
    if (!v.clean) found++
    else harmless++
    if ([...r.failed].every((c) => v.damaged.has(c)) && [...v.damaged].every((c) => r.failed.has(c))) named++
    else if (process.env.ADV_DEBUG) {
      console.log(`flip ${t} in ${path.basename(f)} at ${at}: verify names ${v.damaged.size}, reads fail ${r.failed.size}; named not failing ${[...v.damaged].filter((c) => !r.failed.has(c)).length}, failing not named ${[...r.failed].filter((c) => !v.damaged.has(c)).length}`)
      const s = await openStore(dir, { threads: 0, readOnly: true })
      const it = verifyStore(s, { deep: true })
      let q = await it.next()
      for (; !q.done; q = await it.next()) if (q.value.severity !== 'info') console.log('   ', q.value.severity, q.value.kind, q.value.message.slice(0, 200))
      await s.close()
    }
    fs.rmSync(dir, { recursive: true, force: true })
  }
  rows.push(['one random byte of a pack flipped', String(FLIPS), `verify --deep reported ${found} (an error or warning); ${harmless} hit bytes nothing reads (dead entries, records older than the snapshot: a note only); the damaged checkpoints were named exactly — the ones whose reads fail — in ${named}/${FLIPS}; ${failedReads} reads failed with a CKPT_* code; ${wrong} wrong bytes returned`])
}

// ------------------------------------------------------------------------------------ forged payloads
{
  const chunks: { file: string; offset: number; stored: number }[] = []
  for (const p of packs) {
    for (const ev of scanPackFile(path.join(base, 'packs', p), Number.parseInt(p, 10))) {
      if (ev.kind === 'entry' && ev.entry.kind === ENTRY_KIND.block && ev.entry.cid[1] === 0x55 && ev.entry.storedLength > 8) chunks.push({ file: p, offset: ev.entry.offset, stored: ev.entry.storedLength })
    }
  }
  let named = 0
  let live = 0
  let wrong = 0
  let shallowClean = 0
  for (let t = 0; t < FORGED; t++) {
    const dir = fresh()
    const c = chunks[rand(chunks.length)]!
    const f = path.join(dir, 'packs', c.file)
    const b = fs.readFileSync(f)
    const p = c.offset + 52
    b[p + rand(c.stored)]! ^= 0x20
    let crc = crc32(b.subarray(c.offset, c.offset + 48))
    crc = crc32(b.subarray(p, p + c.stored), crc)
    b.writeUInt32LE(crc >>> 0, c.offset + 48)
    fs.writeFileSync(f, b)
    const s = await openStore(dir, { threads: 0, readOnly: true })
    const it = verifyStore(s, {})
    let q = await it.next()
    for (; !q.done; q = await it.next()) {}
    if (q.value.clean) shallowClean++
    await s.close()
    const v = await deepVerify(dir)
    const r = await readBack(dir)
    wrong += r.wrong
    if (r.failed.size > 0) live++
    if ([...r.failed].every((x) => v.damaged.has(x)) && [...v.damaged].every((x) => r.failed.has(x))) named++
    else if (process.env.ADV_DEBUG) console.log(`forged ${t}: verify names ${v.damaged.size}, reads fail ${r.failed.size}`)
    fs.rmSync(dir, { recursive: true, force: true })
  }
  rows.push(['a chunk payload changed, its CRC-32 recomputed', String(FORGED), `${live} hit a chunk some checkpoint reads; shallow verify clean in ${shallowClean} (it trusts checksums); deep verify named exactly the checkpoints whose reads fail in ${named}/${FORGED}; ${wrong} wrong bytes returned`])
}

// ------------------------------------------------------------------------------------ index loss
{
  const cases: [string, (dir: string) => Promise<void>, boolean][] = [
    ['index/CURRENT deleted', async (d) => fs.rmSync(path.join(d, 'index', 'CURRENT')), false],
    ['index/ deleted', async (d) => fs.rmSync(path.join(d, 'index'), { recursive: true }), false],
    [
      'index emptied (a new empty LevelDB)',
      async (d) => {
        fs.rmSync(path.join(d, 'index'), { recursive: true })
        const db = new Level(path.join(d, 'index'))
        await db.open()
        await db.close()
      },
      false,
    ],
    [
      'one .ldb file deleted',
      async (d) => {
        const ldb = fs.readdirSync(path.join(d, 'index')).filter((f) => f.endsWith('.ldb'))
        if (ldb.length === 0) throw new Error('no .ldb file to delete')
        fs.rmSync(path.join(d, 'index', ldb[0]!))
      },
      true,
    ],
    [
      'MANIFEST-* damaged',
      async (d) => {
        const m = fs.readdirSync(path.join(d, 'index')).find((f) => f.startsWith('MANIFEST-'))!
        const b = fs.readFileSync(path.join(d, 'index', m))
        b.fill(0x5a, 0, Math.min(b.length, 64))
        fs.writeFileSync(path.join(d, 'index', m), b)
      },
      true,
    ],
  ]
  // the base store's index gets .ldb files once LevelDB compacts its log (a few reopens do it)
  for (let k = 0; k < 3; k++) await (await openStore(base, { threads: 0 })).close()
  for (const [name, damage, repair] of cases) {
    const dir = fresh()
    await damage(dir)
    const reader = await readBack(dir)
    let recovery = 'the next writer rebuilds it'
    if (repair) {
      await repairStore(dir, { rebuildIndex: true, deep: false })
      recovery = 'ckpt repair --rebuild-index'
    } else await (await openStore(dir, { threads: 0 })).close()
    const s = await openStore(dir, { threads: 0 })
    const after = await truthOf(s)
    const gc = await s.gc().then(
      () => 'gc ran',
      (e) => `gc: ${e.code}`,
    )
    await s.close()
    const back = [...truth.reads].filter(([c, d]) => after.reads.get(c) === d).length
    const same = after.log === truth.log && after.refs === truth.refs && after.timelines === truth.timelines
    rows.push([name, '1', `readers before recovery: ${checkpoints - reader.failed.size - reader.wrong}/${checkpoints} read back; after ${recovery}: ${back}/${checkpoints} checkpoints byte-identical, catalog (log, refs, timelines) ${same ? 'identical' : 'DIFFERENT'}; ${gc}`])
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

// ------------------------------------------------------------------------------------ two writers
{
  const dir = fresh()
  const s = await openStore(dir, { threads: 0 })
  let right = 0
  const T = 10
  for (let t = 0; t < T; t++) {
    const r = spawnSync(process.execPath, [path.join(import.meta.dirname, '..', 'cli', 'ckpt.js'), 'add', '--store', dir, '--timeline', 'x', '--vtime', '1', '--blob', `b=${path.join(dir, 'CKPT')}`, '--json'], { encoding: 'utf8' })
    const e = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as { error?: { code?: string; message?: string } }
    if (r.status === 3 && e.error?.code === 'CKPT_LOCKED' && e.error.message?.includes(String(process.pid))) right++
  }
  await s.close()
  rows.push(['a second writer while one holds the store', String(T), `${right}/${T} got CKPT_LOCKED (exit 3) naming the holder's pid`])
}

const out = `# ckpt adversarial run (${new Date().toISOString()})\n\n${os.cpus().length} cores, node ${process.version}; base store: ${checkpoints} checkpoints, ${packs.length} packs\n\n${table(rows)}\n`
console.log(out)
fs.mkdirSync(path.join(import.meta.dirname, '..', '..', 'bench', 'results'), { recursive: true })
fs.writeFileSync(path.join(import.meta.dirname, '..', '..', 'bench', 'results', 'adversarial.md'), out)
fs.rmSync(root, { recursive: true, force: true })
