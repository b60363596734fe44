/**
 * `npm run demo`: the main job on the default store (./ckpt-store, or CKPT_STORE). Simulates an emulator
 * with 256 MiB of RAM and a 512 MiB disk taking 2,000 checkpoints 10 ms of virtual time apart, with a
 * hot set, zero pages, and code- and text-like pages; restores a few checkpoints and checks them
 * byte-identical; steps a cursor back 10 checkpoints and asks a page's history; prints a summary. Each run adds a new timeline; the workload is deterministic, so a
 * second run dedups against the first.
 */
import fs from 'node:fs'
import path from 'node:path'
import { defaultStorePath, openStore } from '../src/index.js'
import { fmtBytes, median, MiB, quantile } from './stats.js'
import { Workload } from './workload.js'

const COUNT = Number(process.env.DEMO_CHECKPOINTS ?? 2000)
const STEP_NS = 10_000_000n // 10 ms of virtual time, in nanoseconds
const dir = defaultStorePath()
const t0 = performance.now()
const elapsed = () => ((performance.now() - t0) / 1000).toFixed(1) + ' s'
const tty = process.stdout.isTTY

console.log(`ckpt demo: ${COUNT} checkpoints of a 256 MiB RAM + 512 MiB disk guest into ${dir}`)
const w = new Workload({ dirtyPages: 300, dirtyClusters: 4, seed: 2026 })
const store = await openStore(dir)
const name = `demo-${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}`
const tl = await store.timeline(name, { regions: { ram: { size: w.ram.length, chunkSize: 4096 }, disk: { size: w.disk.length, chunkSize: 65536 } } })

const keep = new Map<number, { ram: Buffer; disk: Buffer; cid: string }>()
// Buffer.from(buffer) takes a slow element-wise path for large buffers; allocUnsafe + copy is a memcpy
const clone = (b: Buffer): Buffer => {
  const c = Buffer.allocUnsafe(b.length)
  b.copy(c)
  return c
}
const checkAt = new Set([0, Math.floor(COUNT / 3), Math.floor((2 * COUNT) / 3), COUNT - 1])
const pause: number[] = []
const commit: number[] = []
let logical = 0
let newStored = 0
let meta = 0
/** a page the guest wrote in its last step: the demo asks for its history */
let lastPage = 0

const first = await tl.checkpoint({
  vtime: 0n,
  regions: { ram: { data: w.ram, stable: true }, disk: { data: w.disk, stable: true } },
  blobs: { cpu: Buffer.from('cpu registers at step 0') },
  meta: { label: 'boot' },
})
keep.set(0, { ram: clone(w.ram), disk: clone(w.disk), cid: first.cid.toString() })
logical += w.ram.length + w.disk.length
newStored += first.stats.newStoredBytes
let pending = Promise.resolve()
for (let k = 1; k < COUNT; k++) {
  // the guest runs for 10 ms: some pages and clusters change
  const d = w.next()
  lastPage = d.pages[0] ?? lastPage
  const t = performance.now()
  const ck = tl.checkpoint({
    vtime: BigInt(k) * STEP_NS,
    regions: { ram: { data: w.ram, dirty: d.pages }, disk: { data: w.disk, dirty: d.clusters } },
    blobs: { cpu: Buffer.from(`cpu registers at step ${k}`) },
  })
  pause.push(performance.now() - t)
  // copy-then-resume: the emulator goes on at once; a checkpoint is kept only to check it afterwards
  if (checkAt.has(k)) keep.set(k, { ram: clone(w.ram), disk: clone(w.disk), cid: '' })
  pending = pending.then(() =>
    ck.then((c) => {
      commit.push(c.stats.commitMs)
      newStored += c.stats.newStoredBytes
      meta += c.stats.nodeBytes + c.stats.manifestBytes
      if (keep.has(k)) keep.get(k)!.cid = c.cid.toString()
    }),
  )
  logical += w.ram.length + w.disk.length
  if (k % 4 === 0) await pending // the emulator's own pacing: at most 4 checkpoints in flight
  if (tty && k % 50 === 0) process.stdout.write(`\r  ${k}/${COUNT} checkpoints, ${elapsed()}   `)
}
await pending
if (tty) process.stdout.write('\r' + ' '.repeat(60) + '\r')
const ingestS = (performance.now() - t0) / 1000

let ok = 0
for (const [k, want] of keep) {
  const ram = Buffer.from(new SharedArrayBuffer(w.ram.length))
  const disk = Buffer.from(new SharedArrayBuffer(w.disk.length))
  await store.restore(want.cid, 'ram', ram)
  await store.restore(want.cid, 'disk', disk)
  const same = ram.equals(want.ram) && disk.equals(want.disk)
  const seek = await store.seek(name, BigInt(k) * STEP_NS + 5_000_000n)
  const seekOk = seek?.cid.toString() === want.cid
  console.log(`  restore checkpoint ${k} (${want.cid.slice(0, 16)}…): ${same ? 'byte-identical' : 'DIFFERENT'}; seek(+5 ms) ${seekOk ? 'finds it' : 'WRONG'}`)
  if (same && seekOk) ok++
}
// time travel: a cursor steps back from the end a checkpoint at a time, writing only what differs
const cur = await store.cursor(name)
await cur.goto(name)
const jumps: number[] = []
for (let k = 1; k <= 10; k++) jumps.push((await cur.goto(BigInt(COUNT - 1 - k) * STEP_NS)).ms)
const back = cur.current!
const th = performance.now()
let changes = -1 // the first entry is the baseline
for await (const _ of store.history(name, 'ram', lastPage)) changes++
console.log(`  cursor: 10 steps back one checkpoint at a time, median ${median(jumps).toFixed(1)} ms a jump (now at vtime ${back.vtime})`)
console.log(`  history: RAM page ${lastPage} changed at ${changes} checkpoint${changes === 1 ? '' : 's'} (${(performance.now() - th).toFixed(1)} ms to find them)`)
const s = await store.stats()
await store.close()
const du = (d: string): number =>
  fs.readdirSync(d, { withFileTypes: true }).reduce((n, e) => n + (e.isDirectory() ? du(path.join(d, e.name)) : fs.statSync(path.join(d, e.name)).size), 0)
const onDisk = du(dir)
console.log(`
timeline          ${name}: ${COUNT} checkpoints, ${(Number(BigInt(COUNT - 1) * STEP_NS) / 1e9).toFixed(2)} s of virtual time
logical bytes     ${fmtBytes(logical)} (${COUNT} x 768 MiB)
stored this run   ${fmtBytes(newStored)} of chunks + ${fmtBytes(meta)} of tree nodes and manifests
store on disk     ${fmtBytes(onDisk)} in ${s.packs} pack(s) + index, ${s.checkpoints} checkpoints in ${s.timelines} timeline(s)
pause             median ${median(pause).toFixed(2)} ms, p99 ${quantile(pause, 0.99).toFixed(2)} ms  (checkpoint() returning to the emulator)
commit latency    median ${median(commit).toFixed(1)} ms, p99 ${quantile(commit, 0.99).toFixed(1)} ms  (call to durable)
ingest            ${(ingestS).toFixed(1)} s wall for ${COUNT} checkpoints (${((COUNT * 300 * 4096 + COUNT * 4 * 65536) / MiB / ingestS).toFixed(0)} MiB/s of dirty data)
restores          ${ok}/${keep.size} byte-identical
total             ${elapsed()}`)
if (ok !== keep.size) process.exit(1)
