/**
 * `npm run bench`: workload S of issue 2 on a fresh on-disk store, every figure the issue names, each
 * against its target, as a table. Quick mode (BENCH_QUICK=1) shrinks the workload for a smoke run.
 * BENCH_ONLY=restore keeps the full workload but measures only the ingest it needs and the restore and
 * random-read rows (BENCH_CHECKPOINTS=20 with it: the same 768 MiB images, a shorter history).
 * Results also go to bench/results/core.md (core-quick.md, core-restore.md).
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { blake3, deflateCompressor, loadBackend, zstdCompressor } from '../codecs/index.js'
import { openStore, type Checkpoint } from '../src/index.js'
import { ENTRY_KIND, scanPackFile } from '../store/index.js'
import { IdealSize } from './ideal.js'
import { describeStoreBytes, measureStoreBytes } from './store-bytes.js'
import { fmtBytes, median, MiB, peakRssMiB, quantile, table, dirBytes } from './stats.js'
import { Workload } from './workload.js'

const quick = process.env.BENCH_QUICK === '1'
const only = process.env.BENCH_ONLY
if (only !== undefined && only !== '' && only !== 'restore') throw new Error(`BENCH_ONLY=${only}: the only subset is restore`)
/** a section the run measures (BENCH_ONLY=restore: the restore and random-read sections alone) */
const measure = (section: 'other' | 'restore') => !only || section === 'restore'
const N = Number(process.env.BENCH_CHECKPOINTS ?? (quick ? 20 : 100))
const SEEK_N = quick ? 1000 : 10_000
/** export + import rounds (each a process of its own); the rows quote medians */
const BUNDLE_ROUNDS = quick ? 1 : 3
const root = fs.mkdtempSync(path.join(process.env.BENCH_DIR ?? os.tmpdir(), 'ckpt-bench-'))
const results: Record<string, number | string> = {}
const rows: string[][] = [['figure', 'measured', 'target', 'ok']]
function row(name: string, value: string, target = '', ok?: boolean) {
  rows.push([name, value, target, ok === undefined ? '' : ok ? 'yes' : 'NO'])
}

console.log(`ckpt bench: workload S${quick ? ' (quick)' : ''}, ${N} checkpoints, ${os.cpus().length} cores, node ${process.version}, store in ${root}`)

// --- backends (the measurements behind SPEC.md's choices), same run ---
if (measure('other')) {
  const w = new Workload({ ramBytes: 32 * MiB, diskBytes: 64 * MiB, seed: 7 })
  const pages: Uint8Array[] = []
  for (let i = 0; i < w.ram.length; i += 4096) {
    const p = w.ram.subarray(i, i + 4096)
    if (p.some((b) => b !== 0)) pages.push(p)
  }
  const mbps = (bytes: number, ms: number) => (bytes / MiB / (ms / 1000)).toFixed(0)
  for (const name of ['napi', 'hash-wasm', 'noble'] as const) {
    const b = await loadBackend(name)
    if (!b) continue
    const n = name === 'noble' ? 500 : pages.length
    const t = performance.now()
    for (let i = 0; i < n; i++) b.hash(pages[i]!)
    row(`BLAKE3 ${name}, 4 KiB pages`, `${mbps(n * 4096, performance.now() - t)} MiB/s`)
  }
  for (const c of [zstdCompressor(), deflateCompressor()]) {
    if (!c) continue
    let out = 0
    const t = performance.now()
    for (const p of pages) out += c.compress(p).length
    row(`compress ${c.name}, 4 KiB pages`, `${mbps(pages.length * 4096, performance.now() - t)} MiB/s, ratio ${((pages.length * 4096) / out).toFixed(2)}`)
  }
  void blake3
}

const w = new Workload()
const store = await openStore(path.join(root, 'store'))
const ramSize = w.ram.length
const diskSize = w.disk.length
const tl = await store.timeline('run', { regions: w.regions() })
const ideal = new IdealSize()
ideal.addUnits(w.ram, 4096)
ideal.addUnits(w.disk, 65536)

// --- ingest with dirty hints ---
const pause: number[] = []
const commit: number[] = []
const pausePerPage: number[] = []
let metaBytes = 0
let chunkBytes = 0
let dirtyBytes = 0
const rssSamples: number[] = [process.memoryUsage().rss / MiB]
let first!: Checkpoint
let last!: Checkpoint
const checkpointCids: Checkpoint['cid'][] = []
{
  const t = performance.now()
  // the first checkpoint is awaited before the images change, so no copy is needed (stable)
  first = await tl.checkpoint(w.first())
  results.initial_ingest_ms = performance.now() - t
  checkpointCids.push(first.cid)
  rssSamples.push(process.memoryUsage().rss / MiB)
}
for (let k = 1; k < N; k++) {
  const d = w.nextCheckpoint()
  ideal.addUnits(w.ram, 4096, d.pages)
  ideal.addUnits(w.disk, 65536, d.clusters)
  const t0 = performance.now()
  const pending = tl.checkpoint(d.input)
  const p = performance.now() - t0
  last = await pending
  checkpointCids.push(last.cid)
  pause.push(p)
  pausePerPage.push(p / d.pages.length)
  commit.push(last.stats.commitMs)
  rssSamples.push(process.memoryUsage().rss / MiB)
  metaBytes += last.stats.nodeBytes + last.stats.manifestBytes
  chunkBytes += last.stats.newStoredBytes
  dirtyBytes += d.dirtyBytes
}
const totalCommitS = commit.reduce((a, b) => a + b, 0) / 1000
const pauseMed = median(pause)
const pauseP99 = quantile(pause, 0.99)
const pauseBudget = 1000 * 0.002 + 0.5
row('pause median (1,000 dirty pages + 20 clusters)', `${pauseMed.toFixed(2)} ms`, `<= ${pauseBudget} ms`, pauseMed <= pauseBudget)
row('pause p99', `${pauseP99.toFixed(2)} ms`)
row('commit latency median (dirty hints)', `${median(commit).toFixed(1)} ms`, '<= 10 ms', median(commit) <= 10)
row('commit latency p99', `${quantile(commit, 0.99).toFixed(1)} ms`, '<= 30 ms', quantile(commit, 0.99) <= 30)
const mbs = dirtyBytes / MiB / totalCommitS
row('ingest with dirty hints', `${mbs.toFixed(0)} MiB/s of dirty data`, '>= 250 MB/s', (dirtyBytes / 1e6) / totalCommitS >= 250)
row('initial full ingest (768 MiB, buffers)', `${(results.initial_ingest_ms as number).toFixed(0)} ms`)
const metaRatio = metaBytes / chunkBytes
row('tree metadata per checkpoint', `${fmtBytes(metaBytes / (N - 1))} (${(metaRatio * 100).toFixed(1)}% of chunk data)`, '<= 15%', metaRatio <= 0.15)
const rssIngest = Math.max(...rssSamples)
const rssBase = rssSamples[0]!

// --- stored bytes vs ideal ---
await store.close()
const storeBytes = dirBytes(path.join(root, 'store'))
const ratio = storeBytes / ideal.bytes
row(`stored bytes after ${N} checkpoints`, `${fmtBytes(storeBytes)} = ${ratio.toFixed(3)} x ideal (${fmtBytes(ideal.bytes)})`, '<= 1.05 x', ratio <= 1.05)
results.store_bytes = storeBytes
results.ideal_bytes = ideal.bytes
{
  const parts = measureStoreBytes(path.join(root, 'store'))
  row('stored bytes by part (% of ideal)', describeStoreBytes(parts, ideal.bytes))
}

// --- verify (issue 4): structure + DAG, and deep, on the workload's store, as `ckpt verify` runs:
// each in a process of its own (the timing excludes only the process start and the store's open)
if (measure('other')) {
  const runs = (deep: boolean) =>
    Array.from({ length: 3 }, () => {
      const r = spawnSync(process.execPath, [path.join(import.meta.dirname, 'bundle-child.js'), 'verify', path.join(root, 'store'), deep ? 'deep' : ''], { encoding: 'utf8' })
      if (r.status !== 0) throw new Error(`verify child failed: ${r.stderr}`)
      return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { ms: number; clean: boolean; checkpoints: number; blocks: number; dataBytes: number; phases: { structure: number; dag: number; data: number }; rssMiB: number; maxStallMs: number }
    })
  const shallow = runs(false)
  const deep = runs(true)
  const packBytes = dirBytes(path.join(root, 'store', 'packs'))
  const ms = median(shallow.map((r) => r.ms))
  const v = shallow[0]!
  row(`verify structure + DAG (${v.checkpoints} checkpoints, ${v.blocks} blocks), median of 3`, `${(ms / 1000).toFixed(2)} s (structure ${(median(shallow.map((r) => r.phases.structure)) / 1000).toFixed(2)} s, dag ${(median(shallow.map((r) => r.phases.dag)) / 1000).toFixed(2)} s; ${(packBytes / MiB / (ms / 1000)).toFixed(0)} MiB/s of packs), clean: ${v.clean}`, '<= 1 s', ms <= 1000 && v.clean)
  const dms = median(deep.map((r) => r.ms))
  row('verify --deep (every block re-hashed), median of 3', `${(dms / 1000).toFixed(2)} s (${(deep[0]!.dataBytes / MiB / (dms / 1000)).toFixed(0)} MiB/s of block bytes), peak RSS ${Math.max(...deep.map((r) => r.rssMiB)).toFixed(0)} MiB`, '<= 1.5 s', dms <= 1500)
  // verify reads synchronously between its awaits: how long a server or an emulator sharing the process waits, at most
  row('verify: the longest the event loop waited for a timer, median of 3 (structure + DAG / deep)', `${median(shallow.map((r) => r.maxStallMs)).toFixed(0)} / ${median(deep.map((r) => r.maxStallMs)).toFixed(0)} ms`)
}

const store2 = await openStore(path.join(root, 'store'))
// --- restore of the last checkpoint ---
{
  // shared memory: the workers place chunks directly (the documented fast path for restore)
  const ram = Buffer.from(new SharedArrayBuffer(ramSize))
  const disk = Buffer.from(new SharedArrayBuffer(diskSize))
  const times: number[] = []
  for (let r = 0; r < 3; r++) {
    const t = performance.now()
    await store2.restore(last.cid, 'ram', ram)
    await store2.restore(last.cid, 'disk', disk)
    times.push(performance.now() - t)
  }
  const ok = ram.equals(w.ram) && disk.equals(w.disk)
  row('restore last checkpoint (768 MiB), median of 3', `${median(times).toFixed(0)} ms (${((ramSize + diskSize) / MiB / (median(times) / 1000)).toFixed(0)} MiB/s), byte-identical: ${ok}`, '<= 500 ms', median(times) <= 500 && ok)
}
// --- restore of the last checkpoint to files (sparse: holes are not written), as `ckpt restore --out` does ---
{
  const dir = fs.mkdtempSync(path.join(root, 'files-'))
  const ramFile = path.join(dir, 'ram.bin')
  const diskFile = path.join(dir, 'disk.raw')
  const times: number[] = []
  for (let r = 0; r < 3; r++) {
    fs.rmSync(ramFile, { force: true })
    fs.rmSync(diskFile, { force: true })
    const t = performance.now()
    await store2.restore(last.cid, 'ram', ramFile)
    await store2.restore(last.cid, 'disk', diskFile)
    times.push(performance.now() - t)
  }
  const ok = fs.readFileSync(ramFile).equals(w.ram) && fs.readFileSync(diskFile).equals(w.disk)
  const allocated = (fs.statSync(ramFile).blocks + fs.statSync(diskFile).blocks) * 512
  row('restore last checkpoint to sparse files (768 MiB), median of 3', `${median(times).toFixed(0)} ms, ${fmtBytes(allocated)} allocated, byte-identical: ${ok}`, '<= 500 ms', median(times) <= 500 && ok)
  fs.rmSync(dir, { recursive: true, force: true })
}
// --- random page reads: a first pass (leaves and their chunk locations not cached yet), then warm ---
{
  const pages = ramSize / 4096
  for (const pass of ['first pass', 'warm'] as const) {
    const times: number[] = []
    for (let i = 0; i < 20_000; i++) {
      const p = Math.floor(Math.random() * pages)
      const t = performance.now()
      await store2.readChunk(last.cid, 'ram', p)
      times.push((performance.now() - t) * 1000)
    }
    const p50 = median(times)
    const p99 = quantile(times, 0.99)
    row(`random page read p50 (${pass})`, `${p50.toFixed(1)} us`, '<= 20 us', p50 <= 20)
    row(`random page read p99 (${pass})`, `${p99.toFixed(1)} us`, '<= 200 us', p99 <= 200)
  }
}
// --- full scan from files in the page cache ---
if (measure('other')) {
  const ramFile = path.join(root, 'ram.bin')
  const diskFile = path.join(root, 'disk.raw')
  fs.writeFileSync(ramFile, w.ram)
  fs.writeFileSync(diskFile, w.disk)
  const scan = await store2.timeline('scan', { regions: w.regions() })
  await scan.checkpoint({ vtime: 0n, regions: { ram: { data: ramFile }, disk: { data: diskFile } } })
  const times: number[] = []
  const fdR = fs.openSync(ramFile, 'r+')
  const fdD = fs.openSync(diskFile, 'r+')
  for (let k = 1; k <= (quick ? 3 : 7); k++) {
    const d = w.next()
    for (const p of d.pages) fs.writeSync(fdR, w.ram, p * 4096, 4096, p * 4096)
    for (const c of d.clusters) fs.writeSync(fdD, w.disk, c * 65536, 65536, c * 65536)
    fs.readFileSync(ramFile).length // keep both in the page cache, as the issue states
    fs.readFileSync(diskFile).length
    const t = performance.now()
    await scan.checkpoint({ vtime: BigInt(k), regions: { ram: { data: ramFile }, disk: { data: diskFile } } })
    times.push(performance.now() - t)
  }
  fs.closeSync(fdR)
  fs.closeSync(fdD)
  row('full scan of a 768 MiB checkpoint (files in page cache)', `${median(times).toFixed(0)} ms median`, '<= 300 ms', median(times) <= 300)
}
// --- seek among many checkpoints ---
if (measure('other')) {
  const small = await store2.timeline('seek', { regions: { mem: { size: 64 * 4096, chunkSize: 4096 } } })
  const mem = Buffer.alloc(64 * 4096)
  const t = performance.now()
  for (let k = 0; k < SEEK_N; k++) {
    const p = k % 64
    mem.writeUInt32LE(k, p * 4096)
    await small.checkpoint({ vtime: BigInt(k) * 10n, regions: { mem: { data: mem, dirty: [p] } } })
  }
  const buildMs = performance.now() - t
  const times: number[] = []
  for (let i = 0; i < 10_000; i++) {
    const v = BigInt(Math.floor(Math.random() * SEEK_N * 10))
    const t0 = performance.now()
    const e = await store2.seek('seek', v)
    times.push((performance.now() - t0) * 1000)
    if (!e || e.vtime !== (v / 10n) * 10n) throw new Error(`seek(${v}) returned ${e?.vtime}`)
  }
  row(`seek among ${SEEK_N.toLocaleString()} checkpoints, p50 / p99`, `${median(times).toFixed(0)} us / ${quantile(times, 0.99).toFixed(0)} us`, '<= 500 us', median(times) <= 500)
  row(`small checkpoints (1 dirty page), ${SEEK_N.toLocaleString()} in a row`, `${(buildMs / SEEK_N).toFixed(2)} ms each`)
}
await store2.close()

// --- bundles (issue 3): export and import of the N checkpoints, each in a process of its own ---
if (measure('other')) {
  const child = (args: string[]) => {
    const r = spawnSync(process.execPath, [path.join(import.meta.dirname, 'bundle-child.js'), ...args], { encoding: 'utf8', maxBuffer: 16 << 20 })
    if (r.status !== 0) throw new Error(`bundle child failed: ${r.stderr}`)
    return JSON.parse(r.stdout.trim().split('\n').at(-1)!)
  }
  const storeDir = path.join(root, 'store')
  const roots = checkpointCids.map((c) => c.toString())
  const car = path.join(root, 'run.car')
  // three rounds, export then import, each in a fresh process: the machine is shared and one run's
  // rate or peak RSS moves by 10% between runs; the rows quote the medians, with the range
  type Ex = { ms: number; cpuMs: number; mainCpuMs: number; carBytes: number; bytes: number; blocks: number; rssMiB: number; maxStallMs: number }
  type Im = { ms: number; cpuMs: number; mainCpuMs: number; bytes: number; storedBytes: number; rssMiB: number; maxStallMs: number }
  const exs: Ex[] = []
  const ims: Im[] = []
  for (let round = 0; round < BUNDLE_ROUNDS; round++) {
    exs.push(child(['export', storeDir, car, ...roots]))
    fs.rmSync(path.join(root, 'imported'), { recursive: true, force: true })
    ims.push(child(['import', path.join(root, 'imported'), car]))
  }
  const mid = <T,>(runs: T[], f: (r: T) => number) => median(runs.map(f))
  const range = <T,>(runs: T[], f: (r: T) => number) => `${Math.min(...runs.map(f)).toFixed(0)}-${Math.max(...runs.map(f)).toFixed(0)}`
  const ex = exs[0]!
  const exRate = (r: Ex) => r.carBytes / 1e6 / (r.ms / 1000)
  const imRate = (r: Im) => r.bytes / 1e6 / (r.ms / 1000)
  const exMBs = mid(exs, exRate)
  row(`bundle export, ${N} checkpoints (to a file, fsynced), median of ${BUNDLE_ROUNDS}`, `${(mid(exs, (r) => r.ms) / 1000).toFixed(2)} s, ${exMBs.toFixed(0)} MB/s (${range(exs, exRate)} MB/s; ${fmtBytes(ex.carBytes)}, ${ex.blocks} blocks)`, '>= 400 MB/s', exMBs >= 400)
  const sizeRatio = ex.carBytes / ex.bytes
  row('bundle size / distinct uncompressed block bytes', `${sizeRatio.toFixed(4)} x (${fmtBytes(ex.bytes)} of blocks)`, '<= 1.02 x', sizeRatio <= 1.02)
  const imMBs = mid(ims, imRate)
  row(`bundle import into an empty store (every block re-hashed), median of ${BUNDLE_ROUNDS}`, `${(mid(ims, (r) => r.ms) / 1000).toFixed(2)} s, ${imMBs.toFixed(0)} MB/s (${range(ims, imRate)} MB/s), stored ${fmtBytes(ims[0]!.storedBytes)}`, '>= 250 MB/s', imMBs >= 250)
  const exRss = mid(exs, (r) => r.rssMiB)
  const imRss = mid(ims, (r) => r.rssMiB)
  row(`bundle peak RSS (export / import process), median of ${BUNDLE_ROUNDS}`, `${exRss.toFixed(0)} / ${imRss.toFixed(0)} MiB (${range(exs, (r) => r.rssMiB)} / ${range(ims, (r) => r.rssMiB)} MiB)`, '<= 256 MiB', Math.max(exRss, imRss) <= 256)
  row('bundle: the longest the event loop waited for a timer, max over rounds (export / import)', `${Math.max(...exs.map((r) => r.maxStallMs)).toFixed(0)} / ${Math.max(...ims.map((r) => r.maxStallMs)).toFixed(0)} ms`)
  // what bounds the rates: the CPU each took in all threads, spread perfectly over the machine's cores
  const cores = os.cpus().length
  const floor = (runs: { cpuMs: number; mainCpuMs: number }[], bytes: number) => {
    const cpu = mid(runs, (r) => r.cpuMs)
    return `${(cpu / 1000).toFixed(2)} s (main thread ${(mid(runs, (r) => r.mainCpuMs) / 1000).toFixed(2)} s): >= ${(cpu / cores / 1000).toFixed(2)} s, <= ${(bytes / 1e6 / (cpu / cores / 1000)).toFixed(0)} MB/s`
  }
  row(`bundle CPU, all threads, and the floor it sets on ${cores} cores (export / import), medians`, `${floor(exs, ex.carBytes)} / ${floor(ims, ims[0]!.bytes)}`)
  const thinCar = path.join(root, 'thin.car')
  const thin = child(['export', storeDir, thinCar, '--since', roots.at(-11)!, ...roots.slice(-10)])
  row('thin bundle (last 10 checkpoints, --since the one before)', `${fmtBytes(thin.carBytes)} = ${((thin.carBytes / ex.carBytes) * 100).toFixed(1)}% of the full bundle`)
  const z = child(['export', storeDir, path.join(root, 'run.car.zst'), '--compress', ...roots])
  row('compressed bundle (--compress: zstd, else gzip)', `${fmtBytes(z.fileBytes)} (${((z.fileBytes / ex.carBytes) * 100).toFixed(0)}% of plain), export ${(z.ms / 1000).toFixed(2)} s`)
  fs.rmSync(car, { force: true })
  fs.rmSync(path.join(root, 'imported'), { recursive: true, force: true })
}
// --- nothing lost (issue 10): the catalog in the packs, and the index rebuilt from them ---
if (measure('other')) {
  const cli = path.join(import.meta.dirname, '..', 'cli', 'ckpt.js')
  const run = (args: string[]) => {
    const t = performance.now()
    const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 })
    const ms = performance.now() - t
    if (r.status !== 0) throw new Error(`ckpt ${args.join(' ')} failed (${r.status}): ${r.stderr}`)
    return { ms, out: r.stdout, err: r.stderr }
  }
  const storeDir = path.join(root, 'store')
  // what the records cost: their bytes in the packs, per commit
  let records = 0
  let recordBytes = 0
  for (const f of fs.readdirSync(path.join(storeDir, 'packs')).filter((x) => x.endsWith('.pack'))) {
    for (const ev of scanPackFile(path.join(storeDir, 'packs', f), Number.parseInt(f, 10))) {
      if (ev.kind === 'entry' && ev.entry.kind === ENTRY_KIND.record) {
        records++
        recordBytes += ev.entry.bytes.length
      }
    }
  }
  row('catalog records in the packs (one per commit)', `${records} records, ${fmtBytes(recordBytes)} (${(recordBytes / Math.max(1, records)).toFixed(0)} B each; ${((recordBytes / dirBytes(path.join(storeDir, 'packs'))) * 100).toFixed(3)}% of the packs)`)
  const logged = run(['log', '--store', storeDir, '--json'])
  const want = logged.out.trim().split('\n').length
  const lost = path.join(root, 'lost')
  const times: number[] = []
  const rebuilds: number[] = []
  for (let k = 0; k < 3; k++) {
    fs.rmSync(lost, { recursive: true, force: true })
    fs.cpSync(storeDir, lost, { recursive: true })
    fs.rmSync(path.join(lost, 'index'), { recursive: true })
    const r = run(['log', '--store', lost, '--json'])
    times.push(r.ms)
    if (r.out.trim().split('\n').length !== want) throw new Error(`log from the packs alone listed ${r.out.trim().split('\n').length} checkpoints, not ${want}`)
    const rb = run(['repair', '--store', lost, '--rebuild-index', '--shallow', '--json'])
    rebuilds.push(JSON.parse(rb.out).rebuiltIndex ? rb.ms : NaN)
    const again = run(['log', '--store', lost, '--json'])
    if (again.out !== logged.out) throw new Error('the rebuilt catalog does not list what the lost one did')
  }
  row(`ckpt log with the index (${want} checkpoints)`, `${logged.ms.toFixed(0)} ms`)
  row('ckpt log with index/ deleted (reads the packs alone), median of 3', `${median(times).toFixed(0)} ms (${(dirBytes(path.join(storeDir, 'packs')) / MiB / (median(times) / 1000)).toFixed(0)} MiB/s of packs)`)
  row('ckpt repair --rebuild-index --shallow (index + catalog from the packs, then verify), median of 3', `${(median(rebuilds) / 1000).toFixed(2)} s; every checkpoint back: yes`)
  fs.rmSync(lost, { recursive: true, force: true })
}
const rssBudget = 1.5 * ((ramSize + diskSize) / MiB) + 256
row('peak RSS during ingest (sampled; the process holds the 768 MiB images and 48 MiB of content pools)', `${rssIngest.toFixed(0)} MiB (before ingest ${rssBase.toFixed(0)} MiB: ckpt adds ${(rssIngest - rssBase).toFixed(0)} MiB)`, `<= ${rssBudget} MiB`, rssIngest <= rssBudget)
row('peak RSS, whole bench', `${peakRssMiB().toFixed(0)} MiB`)

console.log('\n' + table(rows))
fs.mkdirSync(path.join(import.meta.dirname, '..', '..', 'bench', 'results'), { recursive: true })
fs.writeFileSync(
  path.join(import.meta.dirname, '..', '..', 'bench', 'results', only ? `core-${only}.md` : quick ? 'core-quick.md' : 'core.md'),
  `# ckpt core bench (${new Date().toISOString()})\n\n${os.cpus().length} cores, ${os.cpus()[0]?.model}, node ${process.version}, ${N} checkpoints of workload S\n\n${table(rows)}\n`,
)
fs.rmSync(root, { recursive: true, force: true })
