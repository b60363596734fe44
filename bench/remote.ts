/**
 * `npm run bench:remote` (issue 12 §8): workload S recorded into a local store, pushed whole to an empty
 * remote prefix, thin pushes of new checkpoints, a full pull and a lazy pull into fresh stores, cold
 * lazy page reads, a lazy restore of a whole checkpoint; restic backup/restore of the same series to the
 * same server in the same run as the peer; and the 1,000,000-checkpoint simulation (bench/remote-sim.ts).
 * Every figure beside its target. The server: the local Ceph RADOS Gateway when its env is set and
 * AWS_ENDPOINT_URL_S3 answers (source /tmp/ceph/env), else s3rver started here; the output says which.
 * Results: bench/results/remote-<server>.txt.
 *
 * Env: BENCH_CHECKPOINTS (default 10), BENCH_BUCKET (default ckpt-bench), BENCH_LAZY_READS (default 50),
 * BENCH_RESTIC=0 (skip restic), BENCH_SIM=0 (skip the simulation), BENCH_KEEP=1 (leave the objects).
 * MB = 10^6 bytes, MiB = 2^20.
 */
import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { DEFAULT_FANOUT, openStore, type Checkpoint } from '../src/index.js'
import { openObjectStore } from '../store/index.js'
import { ensureBucket, startS3rver, type TestS3 } from '../test/helpers/s3-server.js'
import { IdealSize } from './ideal.js'
import { deletePrefix, runSim, type SimResult } from './remote-sim.js'
import { fmtBytes, median, MiB, peakRssMiB, quantile, table } from './stats.js'
import { Workload } from './workload.js'

const N = Number(process.env.BENCH_CHECKPOINTS ?? 10)
const THIN = 5
const LAZY_READS = Number(process.env.BENCH_LAZY_READS ?? 50)
const REPS = Number(process.env.BENCH_REPS ?? 3)
const BUCKET = process.env.BENCH_BUCKET ?? 'ckpt-bench'
const RUN = `run-${new Date().toISOString().replace(/[:.]/g, '-')}-${crypto.randomBytes(2).toString('hex')}`
const root = fs.mkdtempSync(path.join(process.env.BENCH_DIR ?? os.tmpdir(), 'ckpt-bench-remote-'))
const MB = 1e6
const log = (s: string) => console.log(`[${(performance.now() / 1000).toFixed(1)} s] ${s}`)

// --- the server ---
let server: 'ceph' | 's3rver'
let env: Record<string, string | undefined>
let s3rver: TestS3 | undefined
let bucket = BUCKET
async function answers(endpoint: string): Promise<boolean> {
  try {
    const r = await fetch(endpoint, { signal: AbortSignal.timeout(3000) })
    await r.arrayBuffer()
    return true
  } catch {
    return false
  }
}
const endpoint = process.env.AWS_ENDPOINT_URL_S3 || process.env.AWS_ENDPOINT_URL
if (endpoint && process.env.AWS_ACCESS_KEY_ID && (await answers(endpoint))) {
  server = 'ceph'
  env = { ...process.env }
  await ensureBucket(`s3://${bucket}`, env)
} else {
  server = 's3rver'
  s3rver = await startS3rver()
  env = { ...s3rver.env }
  bucket = /^s3:\/\/([^/]+)/.exec(s3rver.url('x'))![1]!
}
const ENDPOINT = env.AWS_ENDPOINT_URL_S3!
const base = `s3://${bucket}/${RUN}`
const remote = `${base}/s`
log(`ckpt bench:remote: server ${server === 'ceph' ? `Ceph RADOS Gateway at ${ENDPOINT} (from the env)` : `s3rver (started here) at ${ENDPOINT}`}, remote ${remote}; workload S, ${N} checkpoints + ${THIN} thin; ${os.cpus().length} cores, node ${process.version}; local stores in ${root}`)

const rows: string[][] = [['figure', 'measured', 'target', 'met']]
function row(name: string, value: string, target = '', ok?: boolean) {
  rows.push([name, value, target, ok === undefined ? '' : ok ? 'yes' : 'NO'])
}
const mbps = (bytes: number, ms: number) => bytes / MB / (ms / 1000)
/** onProgress that notes when each phase began; .text(): "phase +ms …" */
function phases() {
  const t0 = performance.now()
  const seen: [string, number][] = []
  return {
    onProgress: (p: { phase: string }) => {
      if (seen.at(-1)?.[0] !== p.phase) seen.push([p.phase, performance.now() - t0])
    },
    text: () => seen.map(([ph, ms]) => `${ph} from ${(ms / 1000).toFixed(2)} s`).join(', '),
  }
}
async function prefixBytes(url: string): Promise<{ bytes: number; objects: number }> {
  const o = await openObjectStore(url, { env })
  let bytes = 0
  let objects = 0
  for await (const x of o.list('')) {
    bytes += x.size
    objects++
  }
  await o.close()
  return { bytes, objects }
}

// --- restic, the peer (as bench/peers/tools.ts runs it: a fixed password, one snapshot per checkpoint) ---
const resticOn = process.env.BENCH_RESTIC !== '0' && spawnSync('restic', ['version']).status === 0
const resticDir = path.join(root, 'restic-src')
const resticEnv = {
  ...process.env,
  AWS_ACCESS_KEY_ID: env.AWS_ACCESS_KEY_ID,
  AWS_SECRET_ACCESS_KEY: env.AWS_SECRET_ACCESS_KEY,
  RESTIC_PASSWORD: 'peers-bench',
  RESTIC_REPOSITORY: `s3:${ENDPOINT}/${bucket}/${RUN}/restic`,
  RESTIC_CACHE_DIR: path.join(root, 'restic-cache'),
} as NodeJS.ProcessEnv
let resticOk = resticOn
let resticNote = resticOn ? '' : process.env.BENCH_RESTIC === '0' ? 'skipped (BENCH_RESTIC=0)' : 'restic is not installed'
const resticBackupMs: number[] = []
function restic(args: string[], cwd?: string): { ms: number; ok: boolean; err: string } {
  const t = performance.now()
  const r = spawnSync('restic', args, { env: resticEnv, cwd, encoding: 'utf8', maxBuffer: 64 << 20 })
  return { ms: performance.now() - t, ok: r.status === 0, err: (r.stderr || '') + (r.error ? String(r.error) : '') }
}
if (resticOk) {
  fs.mkdirSync(resticDir, { recursive: true })
  const r = restic(['init', '-q'])
  if (!r.ok) {
    resticOk = false
    resticNote = `restic init failed on ${server}: ${r.err.trim().split('\n').slice(-2).join(' / ')}`
    log(resticNote)
  }
}

// --- 1. record workload S (the generator of bench/workload.ts, the ideal of bench/ideal.ts) ---
const w = new Workload()
const regions = { ram: { size: w.ram.length, chunkSize: 4096 }, disk: { size: w.disk.length, chunkSize: 65536 } }
const CK = w.ram.length + w.disk.length
const A = await openStore(path.join(root, 'a'))
const tl = await A.timeline('S', { regions })
const ideal = new IdealSize()
ideal.addUnits(w.ram, 4096)
ideal.addUnits(w.disk, 65536)
const cids: Checkpoint['cid'][] = []
let recordMs = 0
{
  let fdR = -1
  let fdD = -1
  for (let k = 0; k < N; k++) {
    const d = k === 0 ? undefined : w.next()
    if (d) {
      ideal.addUnits(w.ram, 4096, d.pages)
      ideal.addUnits(w.disk, 65536, d.clusters)
    }
    const t = performance.now()
    const ck = await tl.checkpoint({
      vtime: BigInt(k) * 10_000_000n,
      regions: d ? { ram: { data: w.ram, dirty: d.pages }, disk: { data: w.disk, dirty: d.clusters } } : { ram: { data: w.ram, stable: true }, disk: { data: w.disk, stable: true } },
      blobs: { cpu: Buffer.from(`cpu state ${k}`) },
    })
    recordMs += performance.now() - t
    cids.push(ck.cid)
    if (resticOk) {
      // the checkpoint's images as files, as bench/peers/ gives them to restic
      if (!d) {
        fs.writeFileSync(path.join(resticDir, 'ram.bin'), w.ram)
        fs.writeFileSync(path.join(resticDir, 'disk.raw'), w.disk)
        fdR = fs.openSync(path.join(resticDir, 'ram.bin'), 'r+')
        fdD = fs.openSync(path.join(resticDir, 'disk.raw'), 'r+')
      } else {
        for (const p of d.pages) fs.writeSync(fdR, w.ram, p * 4096, 4096, p * 4096)
        for (const c of d.clusters) fs.writeSync(fdD, w.disk, c * 65536, 65536, c * 65536)
      }
      const r = restic(['backup', '-q', '--host', 'bench', '--tag', `ckpt-${k}`, '.'], resticDir)
      if (!r.ok) {
        resticOk = false
        resticNote = `restic backup failed on ${server}: ${r.err.trim().split('\n').slice(-2).join(' / ')}`
        log(resticNote)
      } else resticBackupMs.push(r.ms)
    }
  }
  if (fdR >= 0) fs.closeSync(fdR)
  if (fdD >= 0) fs.closeSync(fdD)
}
log(`recorded ${N} checkpoints of S in ${(recordMs / 1000).toFixed(1)} s; ideal ${fmtBytes(ideal.bytes)}${resticOk ? `; restic backups ${(resticBackupMs.reduce((a, b) => a + b, 0) / 1000).toFixed(1)} s` : ''}`)

// --- push of the whole series to an empty prefix ---
const logical = N * CK
// REPS pushes, each of the whole series to an empty prefix: the first to the remote the rest of the bench
// uses, the others to prefixes deleted right after (the machine is noisy: the median is quoted)
const pushPhases = phases()
const push = await A.push(remote, undefined, { env, onProgress: pushPhases.onProgress })
const onRemote = await prefixBytes(remote)
const pushMsAll = [push.ms]
log(`push: ${push.ms} ms (${pushPhases.text()}), ${push.requests.puts} PUTs, ${push.packs} packs, ${fmtBytes(push.bytesOut)} out; remote ${fmtBytes(onRemote.bytes)} in ${onRemote.objects} objects`)
for (let r = 2; r <= REPS; r++) {
  const s = await A.push(`${base}/s-rep${r}`, undefined, { env })
  pushMsAll.push(s.ms)
  const o = await openObjectStore(`${base}/s-rep${r}`, { env })
  await deletePrefix(o)
  await o.close()
  log(`push ${r}: ${s.ms} ms`)
}
const pushMs = median(pushMsAll)
const pushStoredMBs = mbps(push.bytesOut, pushMs)
const pushLogicalMBs = mbps(logical, pushMs)
const ratio = onRemote.bytes / ideal.bytes

// --- thin pushes: one new checkpoint, then push, THIN times ---
const thinMs: number[] = []
const thinPuts: number[] = []
for (let k = 0; k < THIN; k++) {
  const d = w.next()
  const ck = await tl.checkpoint({ vtime: BigInt(N + k) * 10_000_000n, regions: { ram: { data: w.ram, dirty: d.pages }, disk: { data: w.disk, dirty: d.clusters } }, blobs: { cpu: Buffer.from(`cpu state ${N + k}`) } })
  cids.push(ck.cid)
  const ph = phases()
  const s = await A.push(remote, undefined, { env, onProgress: ph.onProgress })
  thinMs.push(s.ms)
  thinPuts.push(s.requests.puts)
  log(`thin push ${k + 1}: ${s.ms} ms (${ph.text()}), ${s.requests.puts} PUTs (gets ${s.requests.gets}, lists ${s.requests.lists}, heads ${s.requests.heads}), ${s.blocks} blocks, ${fmtBytes(s.bytesOut)}`)
}
await A.close()
const latest = cids.at(-1)!.toString()

// --- restic: bytes on the remote, restore latest ---
let resticBytes = 0
let resticRestoreMs = NaN
let resticRestoreOk = false
let resticRestoreMsAll: number[] = []
if (resticOk) {
  resticBytes = (await prefixBytes(`${base}/restic`)).bytes
  const out = path.join(root, 'restic-out')
  const times: number[] = []
  resticRestoreOk = true
  for (let k = 0; k < REPS && resticRestoreOk; k++) {
    const r = restic(['restore', '-q', 'latest', '--host', 'bench', '--target', out])
    if (r.ok) {
      times.push(r.ms)
      resticRestoreOk = fs.readFileSync(path.join(out, 'ram.bin')).equals(fs.readFileSync(path.join(resticDir, 'ram.bin'))) && fs.readFileSync(path.join(out, 'disk.raw')).equals(fs.readFileSync(path.join(resticDir, 'disk.raw')))
    } else {
      resticRestoreOk = false
      resticNote = `restic restore failed: ${r.err.trim().split('\n').slice(-2).join(' / ')}`
    }
    fs.rmSync(out, { recursive: true, force: true })
  }
  resticRestoreMsAll = times
  resticRestoreMs = median(times)
  fs.rmSync(resticDir, { recursive: true, force: true })
  log(`restic: ${fmtBytes(resticBytes)} on the remote, restore latest ${resticRestoreMs.toFixed(0)} ms, byte-identical ${resticRestoreOk}`)
}

// --- 2. full pull into a fresh store ---
const ramBuf = Buffer.from(new SharedArrayBuffer(w.ram.length))
const diskBuf = Buffer.from(new SharedArrayBuffer(w.disk.length))
const fullMsAll: number[] = []
let fullBytes = 0
let fullOk = true
for (let r = 0; r < REPS; r++) {
  const B = await openStore(path.join(root, 'b'))
  const ph = phases()
  const t = performance.now()
  const p = await B.pull(remote, undefined, { env, onProgress: ph.onProgress })
  fullMsAll.push(performance.now() - t)
  fullBytes = p.bytesIn
  if (r === 0) {
    await B.restore(latest, 'ram', ramBuf)
    await B.restore(latest, 'disk', diskBuf)
    fullOk = ramBuf.equals(w.ram) && diskBuf.equals(w.disk)
  }
  await B.close()
  fs.rmSync(path.join(root, 'b'), { recursive: true, force: true })
  log(`full pull: ${fullMsAll.at(-1)!.toFixed(0)} ms (${ph.text()}), ${p.blocks} blocks, ${fmtBytes(p.bytesIn)} in, ${p.requests.gets} GETs${r === 0 ? `; latest restores byte-identical: ${fullOk}` : ''}`)
}
const fullMs = median(fullMsAll)

// --- lazy pull, then a lazy restore of the latest checkpoint (both regions) from a cold cache ---
const lazyMsAll: number[] = []
const lazyRestoreMsAll: number[] = []
let lazyRestoreOk = true
for (let r = 0; r < REPS; r++) {
  const C = await openStore(path.join(root, 'c'))
  let t = performance.now()
  const p = await C.pull(remote, undefined, { lazy: true, env })
  lazyMsAll.push(performance.now() - t)
  ramBuf.fill(0)
  diskBuf.fill(0)
  t = performance.now()
  await C.restore(latest, 'ram', ramBuf)
  await C.restore(latest, 'disk', diskBuf)
  lazyRestoreMsAll.push(performance.now() - t)
  lazyRestoreOk &&= ramBuf.equals(w.ram) && diskBuf.equals(w.disk)
  await C.close()
  fs.rmSync(path.join(root, 'c'), { recursive: true, force: true })
  log(`lazy pull: ${lazyMsAll.at(-1)!.toFixed(0)} ms (${p.requests.gets} GETs, ${fmtBytes(p.bytesIn)} in); lazy restore ${lazyRestoreMsAll.at(-1)!.toFixed(0)} ms, byte-identical ${lazyRestoreOk}`)
}
const lazyMs = median(lazyMsAll)
const lazyRestoreMs = median(lazyRestoreMsAll)

// --- cold lazy page reads: each in a fresh, lazily pulled store (a first read of the disk region starts
// the remote reader; then one random RAM page of the latest checkpoint, every tree node and the page cold) ---
const readUs: number[] = []
const firstUs: number[] = []
{
  let bad = 0
  for (let i = 0; i < LAZY_READS; i++) {
    const dir = path.join(root, `r${i}`)
    const D = await openStore(dir)
    await D.pull(remote, undefined, { lazy: true, env })
    const c = Math.floor(Math.random() * (w.disk.length / 65536))
    let t = performance.now()
    await D.readChunk(latest, 'disk', c)
    firstUs.push((performance.now() - t) * 1000)
    const page = Math.floor(Math.random() * (w.ram.length / 4096))
    t = performance.now()
    const bytes = await D.readChunk(latest, 'ram', page)
    readUs.push((performance.now() - t) * 1000)
    if (!Buffer.from(bytes).equals(w.ram.subarray(page * 4096, page * 4096 + 4096))) bad++
    await D.close()
    fs.rmSync(dir, { recursive: true, force: true })
  }
  log(`lazy page reads (${LAZY_READS}): p50 ${(median(readUs) / 1000).toFixed(1)} ms, p99 ${(quantile(readUs, 0.99) / 1000).toFixed(1)} ms; wrong bytes: ${bad}`)
  if (bad) throw new Error(`${bad} lazy reads returned wrong bytes`)
}

// --- cold lazy page reads in one lazily pulled store: each page under a leaf not read before (the pages of
// a leaf node span DEFAULT_FANOUT × 4 KiB of RAM: each read's leaf and page are in 64 KiB extents no earlier read fetched,
// unless both sit in one thin push's pack); the root and the upper levels are cached after the first ---
const leafUs: number[] = []
{
  const dir = path.join(root, 'leaves')
  const D = await openStore(dir)
  await D.pull(remote, undefined, { lazy: true, env })
  await D.readChunk(latest, 'disk', 0)
  const leaves = new Set<number>()
  const perLeaf = DEFAULT_FANOUT // chunks per leaf node (the workload's timeline is new: the default fan-out)
  while (leaves.size < Math.min(LAZY_READS, w.ram.length / 4096 / perLeaf)) leaves.add(Math.floor(Math.random() * (w.ram.length / 4096 / perLeaf)))
  for (const leaf of leaves) {
    const page = leaf * perLeaf + Math.floor(Math.random() * perLeaf)
    const t = performance.now()
    const bytes = await D.readChunk(latest, 'ram', page)
    leafUs.push((performance.now() - t) * 1000)
    if (!Buffer.from(bytes).equals(w.ram.subarray(page * 4096, page * 4096 + 4096))) throw new Error(`lazy read of page ${page} returned wrong bytes`)
  }
  await D.close()
  fs.rmSync(dir, { recursive: true, force: true })
  log(`lazy page reads under distinct leaves (${leafUs.length}): p50 ${(median(leafUs) / 1000).toFixed(1)} ms, p99 ${(quantile(leafUs, 0.99) / 1000).toFixed(1)} ms`)
}

// --- 4. the simulation ---
let sim: SimResult | undefined
if (process.env.BENCH_SIM !== '0') sim = await runSim(`${base}/sim`, env, log, (process.env.BENCH_SIM_STAGES ?? '10,100,1000').split(',').map(Number))

// --- the table ---
const resticDone = resticOk && resticBackupMs.length === N
const resticBackupTotal = resticBackupMs.reduce((a, b) => a + b, 0)
row('server', server === 'ceph' ? `Ceph RADOS Gateway (local, memstore) at ${ENDPOINT}` : `s3rver 3.7.1 at ${ENDPOINT}`)
row('series', `workload S: ${N} checkpoints of 768 MiB (256 MiB RAM + 512 MiB disk, 1,000 dirty pages + 20 clusters each), then ${THIN} thin`)
row('record S into the local store', `${(recordMs / 1000).toFixed(2)} s`)
row(`push of S (${N} checkpoints) to an empty prefix, median of ${REPS}`, `${(pushMs / 1000).toFixed(2)} s (each: ${pushMsAll.map((x) => (x / 1000).toFixed(2)).join(', ')}); ${pushStoredMBs.toFixed(1)} MB/s stored (${fmtBytes(push.bytesOut)} sent), ${pushLogicalMBs.toFixed(0)} MB/s logical (${fmtBytes(logical)}); ${push.requests.puts} PUTs, ${push.packs} packs`, '>= 60 MB/s (stored)', pushStoredMBs >= 60)
if (resticDone) {
  row(`restic backup of the same ${N} checkpoints (files), total`, `${(resticBackupTotal / 1000).toFixed(2)} s; ${mbps(logical, resticBackupTotal).toFixed(0)} MB/s logical, ${mbps(resticBytes, resticBackupTotal).toFixed(1)} MB/s stored; median ${(median(resticBackupMs) / 1000).toFixed(2)} s per checkpoint`)
  row('push faster than restic backup?', `ckpt push ${(pushMs / 1000).toFixed(2)} s vs restic ${(resticBackupTotal / 1000).toFixed(2)} s (ckpt record + push: ${((recordMs + pushMs) / 1000).toFixed(2)} s)`, 'push < restic', pushMs < resticBackupTotal)
}
row(`bytes on the remote after ${N} checkpoints`, `${fmtBytes(onRemote.bytes)} in ${onRemote.objects} objects = ${ratio.toFixed(3)} x ideal (${fmtBytes(ideal.bytes)})${resticDone ? `; restic ${fmtBytes(resticBytes)} = ${(resticBytes / ideal.bytes).toFixed(2)} x` : ''}`, '<= 1.15 x ideal', ratio <= 1.15)
row(`thin push (1 new checkpoint), median of ${THIN}`, `${(median(thinMs) / 1000).toFixed(3)} s (each: ${thinMs.map((x) => (x / 1000).toFixed(3)).join(', ')})`, '<= 0.5 s', median(thinMs) <= 500)
row('thin push PUTs (data + metadata)', `${thinPuts.join(', ')}`, '<= 4', Math.max(...thinPuts) <= 4)
const pulledLogical = (N + THIN) * CK
const fullMBs = mbps(fullBytes, fullMs)
row(`full pull (${N + THIN} checkpoints) into a fresh store, median of ${REPS}`, `${(fullMs / 1000).toFixed(2)} s (each: ${fullMsAll.map((x) => (x / 1000).toFixed(2)).join(', ')}); ${fullMBs.toFixed(1)} MB/s stored (${fmtBytes(fullBytes)} received), ${mbps(pulledLogical, fullMs).toFixed(0)} MB/s logical; latest byte-identical: ${fullOk}`, '>= 60 MB/s (stored)', fullMBs >= 60 && fullOk)
if (resticDone) {
  row(`restic restore latest (768 MiB to files), median of ${resticRestoreMsAll.length}`, `${(resticRestoreMs / 1000).toFixed(2)} s (each: ${resticRestoreMsAll.map((x) => (x / 1000).toFixed(2)).join(', ')}); ${mbps(CK, resticRestoreMs).toFixed(0)} MB/s logical; byte-identical: ${resticRestoreOk}`)
  row('full pull faster than restic restore?', `ckpt full pull of ${N + THIN} checkpoints ${(fullMs / 1000).toFixed(2)} s vs restic restore of 1 ${(resticRestoreMs / 1000).toFixed(2)} s`, 'pull < restic', fullMs < resticRestoreMs)
} else row('restic', resticNote)
row(`pull --lazy (${N + THIN} checkpoints), median of ${REPS}`, `${(lazyMs / 1000).toFixed(2)} s (each: ${lazyMsAll.map((x) => (x / 1000).toFixed(2)).join(', ')})`)
row(`lazy read of one page, cold (fresh lazily pulled store each, ${LAZY_READS} reads)`, `p50 ${(median(readUs) / 1000).toFixed(1)} ms, p99 ${(quantile(readUs, 0.99) / 1000).toFixed(1)} ms (first read of a store, which starts the remote reader: p50 ${(median(firstUs) / 1000).toFixed(0)} ms)`, 'p50 <= 15 ms', median(readUs) / 1000 <= 15)
row(`lazy read of one page, one lazily pulled store, each page under a leaf not read before (${leafUs.length} reads)`, `p50 ${(median(leafUs) / 1000).toFixed(1)} ms, p99 ${(quantile(leafUs, 0.99) / 1000).toFixed(1)} ms`, 'p50 <= 15 ms', median(leafUs) / 1000 <= 15)
const lazyRestoreMBs = mbps(CK, lazyRestoreMs)
row(`lazy restore of the latest checkpoint (768 MiB, both regions, into buffers), cold, median of ${REPS}`, `${(lazyRestoreMs / 1000).toFixed(2)} s (each: ${lazyRestoreMsAll.map((x) => (x / 1000).toFixed(2)).join(', ')}); ${lazyRestoreMBs.toFixed(0)} MB/s; byte-identical: ${lazyRestoreOk}`, '>= 80 MB/s', lazyRestoreMBs >= 80 && lazyRestoreOk)
if (sim) {
  const last = sim.stages.at(-1)!
  const bytes = sim.objects.reduce((n, o) => n + o.size, 0)
  row('sim: remote', `${sim.stages.at(-1)!.timelines} timelines x 1,000 checkpoints; ${sim.objects.length} objects, ${fmtBytes(bytes)}; tl-500 real (pushed by ckpt: ${(sim.pushMs / 1000).toFixed(1)} s, ${sim.pushPuts} PUTs), the others synthetic${sim.claims ? ' with their claims' : ', without their 999,000 claims'}`)
  row('sim: small PUTs, 32 in flight', `${sim.putRate.toFixed(0)} /s (1,000,000 objects: ${(1e6 / sim.putRate / 60).toFixed(1)} min)`)
  for (const s of sim.stages) {
    const ok = median(s.pullMs) <= 5000 && Math.max(...s.rssMiB) <= 256
    row(`sim: pull --lazy tl-500 (1,000 checkpoints), ${s.timelines} timelines on the remote, median of ${s.pullMs.length}`, `${(median(s.pullMs) / 1000).toFixed(2)} s in pull() (process ${(median(s.wallMs) / 1000).toFixed(2)} s); peak RSS ${Math.max(...s.rssMiB).toFixed(0)} MiB; ${s.gets} GETs, ${s.lists} LISTs, ${s.heads} HEADs, ${fmtBytes(s.bytesIn)} in`, '<= 5 s, <= 256 MiB', s === last ? ok : undefined)
  }
}
row('peak RSS of this process (holds S: 768 MiB images + 48 MiB pools)', `${peakRssMiB().toFixed(0)} MiB`)

const out = table(rows)
console.log('\n' + out)
const resultsDir = path.join(import.meta.dirname, '..', '..', 'bench', 'results')
fs.mkdirSync(resultsDir, { recursive: true })
const header = `# ckpt bench:remote (${new Date().toISOString()})\n\n${os.cpus().length} cores, ${os.cpus()[0]?.model}, node ${process.version}, load ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}; server ${server}; MB = 10^6 B\n\n`
fs.writeFileSync(path.join(resultsDir, `remote-${server}${N !== 10 ? `-${N}` : ''}.txt`), header + out + '\n')

// --- cleanup: the bench's objects (a memstore OSD holds them in RAM) and local stores ---
if (process.env.BENCH_KEEP !== '1') {
  const o = await openObjectStore(base, { env })
  const n = await deletePrefix(o)
  await o.close()
  log(`deleted ${n} objects under ${base}`)
}
if (s3rver) await s3rver.close()
fs.rmSync(root, { recursive: true, force: true })
