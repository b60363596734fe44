/**
 * The remote simulation of issue 12's last target: a remote holding 1,000 timelines × 1,000 checkpoints
 * (catalog and index, no page data), and `pull --lazy` of one timeline (tl-500) from it into a fresh
 * store, in a child process, timed with its peak RSS.
 *
 * tl-500 is fully real: a store records 1,000 checkpoints whose regions (256 MiB RAM + 512 MiB disk, the
 * geometry of workload S) are all zero (root null: no page data) and pushes them with store.push, so its
 * objects are ckpt's own (timeline record, 1,000 claims, one catalog segment, one index segment, one pack
 * of 1,000 manifests). The other 999 timelines are written directly with the object store API in the
 * layout of SPEC.md §22 (codecs/remote-format.ts), each: tl/NAME, one pack the size of tl-500's (its bytes
 * with a counter written in, so not a valid pack), one index segment of 1,000 entries (fake CIDs, sorted,
 * pointing into that pack), one catalog segment listing its 1,000 checkpoints (vtimes as tl-500's, fake
 * CIDs). They have the right shape and size but are not pullable. Their 999,000 claims (cp/NAME/VTIME)
 * are written only when BENCH_SIM_CLAIMS=1 (a pull never reads claims; the bench measures the small-PUT
 * rate and says how long they would take).
 *
 * Child mode: node dist/bench/remote-sim.js pull URL STORE_DIR TIMELINE → one JSON line.
 */
import { spawn } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { blake3, cidBytes, cidToString, DAG_CBOR } from '../codecs/index.js'
import { openStore } from '../src/index.js'
import { openObjectStore, type ObjectStore } from '../store/index.js'
import { median, MiB, peakRssMiB } from './stats.js'

type Env = Record<string, string | undefined>

const hex16 = (n: bigint | number) => BigInt(n).toString(16).padStart(16, '0')
const hexOf = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex')

/** Runs `fn` over items, `width` at a time. */
export async function parallel<T>(items: readonly T[], width: number, fn: (x: T, i: number) => Promise<unknown>): Promise<void> {
  let next = 0
  const lane = async () => {
    while (next < items.length) {
      const i = next++
      await fn(items[i]!, i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, lane))
}

/** An index segment, version 1, as SPEC.md §22 lays it out (entries sorted by CID here). */
function encodeSegment(packs: { hash: string; size: number }[], entries: { cid: Uint8Array; offset: number; stored: number; raw: number; codec: number; kind: number }[]): Uint8Array {
  const sorted = [...entries].sort((a, b) => Buffer.compare(a.cid, b.cid))
  const b = Buffer.alloc(24 + packs.length * 40 + sorted.length * 60)
  b.write('CKPTRIDX', 0, 'latin1')
  b.writeUInt16LE(1, 8)
  b.writeUInt32LE(packs.length, 12)
  b.writeUInt32LE(0, 16)
  b.writeUInt32LE(sorted.length, 20)
  let at = 24
  for (const p of packs) {
    b.write(p.hash, at, 'hex')
    b.writeBigUInt64LE(BigInt(p.size), at + 32)
    at += 40
  }
  for (const e of sorted) {
    b.set(e.cid, at)
    b.writeUInt32LE(0, at + 36)
    b.writeBigUInt64LE(BigInt(e.offset), at + 40)
    b.writeUInt32LE(e.stored, at + 48)
    b.writeUInt32LE(e.raw, at + 52)
    b[at + 56] = e.codec
    b[at + 57] = e.kind
    at += 60
  }
  return b
}

/** The entries of a real index segment (SPEC.md §22 layout), to copy their offsets and lengths. */
function decodeSegmentEntries(bytes: Uint8Array): { offset: number; stored: number; raw: number; codec: number; kind: number }[] {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const np = b.readUInt32LE(12)
  const nd = b.readUInt32LE(16)
  const ne = b.readUInt32LE(20)
  let at = 24 + np * 40 + nd * 32
  const out = []
  for (let k = 0; k < ne; k++, at += 60) out.push({ offset: Number(b.readBigUInt64LE(at + 40)), stored: b.readUInt32LE(at + 48), raw: b.readUInt32LE(at + 52), codec: b[at + 56]!, kind: b[at + 57]! })
  return out
}

export interface SimStage {
  timelines: number
  /** store.pull() inside the child, ms, each run */
  pullMs: number[]
  /** the child process, spawn to exit, ms */
  wallMs: number[]
  rssMiB: number[]
  gets: number
  lists: number
  heads: number
  bytesIn: number
}

export interface SimResult {
  url: string
  recordMs: number
  pushMs: number
  pushPuts: number
  objects: { key: string; size: number }[]
  putRate: number
  putProbe: number
  claims: boolean
  writeMs: Record<number, number>
  stages: SimStage[]
}

function runChild(url: string, dir: string, timeline: string, env: Env): Promise<{ ms: number; rssMiB: number; added: number; gets: number; lists: number; heads: number; bytesIn: number; wallMs: number }> {
  return new Promise((resolve, reject) => {
    const t = performance.now()
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url), 'pull', url, dir, timeline], { env: { ...process.env, ...env } as NodeJS.ProcessEnv, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    child.on('exit', (code) => {
      const wallMs = performance.now() - t
      if (code !== 0) return reject(new Error(`sim pull child exited ${code}: ${err}`))
      resolve({ ...JSON.parse(out.trim().split('\n').at(-1)!), wallMs })
    })
  })
}

export async function runSim(url: string, env: Env, log: (s: string) => void, stages = [10, 100, 1000], reps = 3): Promise<SimResult> {
  const objects = await openObjectStore(url, { env })
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-sim-'))
  try {
    // --- tl-500, real: 1,000 checkpoints of all-zero regions, pushed by ckpt ---
    const store = await openStore(path.join(tmp, 'real'))
    const regions = { ram: { size: 256 * MiB, chunkSize: 4096 }, disk: { size: 512 * MiB, chunkSize: 65536 } }
    const tl = await store.timeline('tl-500', { regions })
    const ram = Buffer.alloc(regions.ram.size)
    const disk = Buffer.alloc(regions.disk.size)
    let t = performance.now()
    for (let k = 0; k < 1000; k++) {
      await tl.checkpoint({ vtime: BigInt(k) * 10_000_000n, regions: k === 0 ? { ram: { data: ram, stable: true }, disk: { data: disk, stable: true } } : { ram: { data: ram, dirty: [] }, disk: { data: disk, dirty: [] } } })
    }
    const recordMs = performance.now() - t
    t = performance.now()
    const ps = await store.push(url, ['tl-500'], { env })
    const pushMs = performance.now() - t
    await store.close()
    log(`sim: tl-500 recorded (${recordMs.toFixed(0)} ms) and pushed (${pushMs.toFixed(0)} ms, ${ps.requests.puts} PUTs)`)
    const real: { key: string; size: number }[] = []
    for await (const o of objects.list('')) real.push(o)
    const key = (re: RegExp) => real.find((o) => re.test(o.key))!.key
    const tlRec = JSON.parse(Buffer.from((await objects.get(key(/^tl\//)))!).toString('utf8')) as Record<string, unknown>
    const catalog = JSON.parse(Buffer.from((await objects.get(key(/^cs\//)))!).toString('utf8')) as { checkpoints: { vtime: string; cid: string }[] }
    const segEntries = decodeSegmentEntries((await objects.get(key(/^index\//)))!)
    const pack = Buffer.from((await objects.get(key(/^packs\//)))!)

    // --- small-PUT rate, 32 in flight ---
    const probeN = 2000
    const small = Buffer.from(JSON.stringify({ cid: catalog.checkpoints[0]!.cid, at: Date.now() }))
    t = performance.now()
    await parallel(Array.from({ length: probeN }, (_, i) => i), 32, (i) => objects.put(`probe/${hex16(i)}`, small))
    const putRate = probeN / ((performance.now() - t) / 1000)
    log(`sim: small PUTs, 32 in flight: ${putRate.toFixed(0)}/s (1,000,000 claims would take ${(1e6 / putRate / 60).toFixed(1)} min)`)
    await parallel(Array.from({ length: probeN }, (_, i) => i), 32, (i) => objects.delete(`probe/${hex16(i)}`))
    const claims = process.env.BENCH_SIM_CLAIMS === '1'

    // --- the other timelines, added stage by stage ---
    const others = Array.from({ length: 1000 }, (_, i) => `tl-${String(i).padStart(3, '0')}`).filter((n) => n !== 'tl-500')
    let written = 0
    const writeMs: Record<number, number> = {}
    const result: SimStage[] = []
    for (const count of stages) {
      const batch = others.slice(written, count - 1)
      t = performance.now()
      await parallel(batch, 32, async (name) => {
        const p = Buffer.from(pack)
        p.writeUInt32LE(others.indexOf(name) + 1, 64)
        const packHash = hexOf(blake3(p))
        const cids = catalog.checkpoints.map((_, k) => cidBytes(DAG_CBOR, blake3(Buffer.from(`${name}/${k}`))))
        const seg = encodeSegment(
          [{ hash: packHash, size: p.length }],
          cids.map((cid, k) => ({ cid, ...segEntries[k % segEntries.length]! })),
        )
        const segHash = hexOf(blake3(seg))
        const cs = Buffer.from(JSON.stringify({ ckpt: 'remote-catalog', v: 1, timeline: name, checkpoints: catalog.checkpoints.map((c, k) => ({ vtime: c.vtime, cid: cidToString(cids[k]!) })), indexes: [segHash] }))
        const csHash = hexOf(blake3(cs))
        const first = catalog.checkpoints[0]!.vtime
        const last = catalog.checkpoints.at(-1)!.vtime
        await objects.put(`packs/${packHash.slice(0, 2)}/${packHash}`, p)
        await objects.put(`index/${segHash}`, seg)
        await objects.put(`tl/${encodeURIComponent(name)}`, Buffer.from(JSON.stringify({ ...tlRec, name, lineage: crypto.randomBytes(16).toString('hex') })), { ifNoneMatch: true })
        if (claims) {
          await parallel(catalog.checkpoints, 8, (c, k) => objects.put(`cp/${encodeURIComponent(name)}/${hex16(BigInt(c.vtime))}`, Buffer.from(JSON.stringify({ cid: cidToString(cids[k]!), at: Date.now() })), { ifNoneMatch: true }))
        }
        await objects.put(`cs/${encodeURIComponent(name)}/${hex16(BigInt(first))}-${hex16(BigInt(last))}-${csHash.slice(0, 16)}`, cs)
      })
      writeMs[count] = performance.now() - t
      written = count - 1
      log(`sim: ${count} timelines on the remote (${batch.length} written in ${(writeMs[count]! / 1000).toFixed(1)} s)`)
      const stage: SimStage = { timelines: count, pullMs: [], wallMs: [], rssMiB: [], gets: 0, lists: 0, heads: 0, bytesIn: 0 }
      for (let r = 0; r < reps; r++) {
        const dir = path.join(tmp, `pull-${count}-${r}`)
        const c = await runChild(url, dir, 'tl-500', env)
        if (c.added !== 1000) throw new Error(`sim pull added ${c.added} checkpoints, not 1000`)
        stage.pullMs.push(c.ms)
        stage.wallMs.push(c.wallMs)
        stage.rssMiB.push(c.rssMiB)
        Object.assign(stage, { gets: c.gets, lists: c.lists, heads: c.heads, bytesIn: c.bytesIn })
        fs.rmSync(dir, { recursive: true, force: true })
      }
      log(`sim: pull --lazy tl-500 with ${count} timelines: ${median(stage.pullMs).toFixed(0)} ms median (process ${median(stage.wallMs).toFixed(0)} ms), peak RSS ${Math.max(...stage.rssMiB).toFixed(0)} MiB`)
      result.push(stage)
    }
    const all: { key: string; size: number }[] = []
    for await (const o of objects.list('')) all.push(o)
    return { url, recordMs, pushMs, pushPuts: ps.requests.puts, objects: all, putRate, putProbe: probeN, claims, writeMs, stages: result }
  } finally {
    await objects.close()
    fs.rmSync(tmp, { recursive: true, force: true })
  }
}

/** Deletes every object under a URL's prefix, 32 at a time; returns how many. */
export async function deletePrefix(objects: ObjectStore): Promise<number> {
  const keys: string[] = []
  for await (const o of objects.list('')) keys.push(o.key)
  await parallel(keys, 32, (k) => objects.delete(k))
  return keys.length
}

if (process.argv[2] === 'pull' && process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const [, , , url, dir, timeline] = process.argv
  const store = await openStore(dir!)
  const t = performance.now()
  const s = await store.pull(url!, [timeline!], { lazy: true, env: process.env })
  const ms = performance.now() - t
  await store.close()
  const added = s.timelines.reduce((n, x) => n + x.added, 0)
  console.log(JSON.stringify({ ms, rssMiB: peakRssMiB(), added, gets: s.requests.gets, lists: s.requests.lists, heads: s.requests.heads, bytesIn: s.bytesIn }))
}
