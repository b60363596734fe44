/**
 * Model-based property test of the library API: random writes into a `ram` and a `disk` buffer, random
 * checkpoints (exact dirty lists, bitmaps, supersets, full scans, omitted regions, blobs that carry
 * over), against a model that keeps a copy of every region and blob per checkpoint. Afterwards every
 * checkpoint must restore byte-identical, chunk and blob reads must match, seek must find the model's
 * nearest checkpoint, diff must list exactly the chunks whose contents differ, and equal contents must
 * give equal region roots whatever their history.
 */
import fs from 'node:fs'
import path from 'node:path'
import { CID } from 'multiformats/cid'
import { afterAll, describe, expect, it } from 'vitest'
import { openStore, type CkptStore, type DiffEntry, type Timeline } from '../../src/index.js'
import { makeRng, type Rng } from '../helpers/rng.js'
import { bytesEqual, removeTmpDirs, tmpDir, tmpStorePath } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

const RAM = { size: 256 * 1024, chunkSize: 4096 }
const BLOB_NAMES = ['cpu', 'dev', 'vga.state'] as const

interface RegionModel {
  name: 'ram' | 'disk'
  size: number
  chunkSize: number
  chunks: number
  live: Uint8Array
  /** chunks written since this region was last checkpointed */
  dirtySince: Set<number>
  /** earlier page contents (full-size chunks), for dedup */
  pool: Uint8Array[]
}

interface Snapshot {
  vtime: bigint
  cid: string
  regions: Record<'ram' | 'disk', Uint8Array>
  blobs: Record<string, Uint8Array>
}

function chunkLen(r: { size: number; chunkSize: number }, i: number): number {
  return Math.min(r.chunkSize, r.size - i * r.chunkSize)
}

function pageContent(rng: Rng, r: RegionModel, len: number): Uint8Array {
  const kind = rng.int(0, 10)
  if (kind < 2) return new Uint8Array(len) // zeros: holes
  if (kind < 5 && r.pool.length > 0) return rng.pick(r.pool).subarray(0, len) // repeated page: dedup
  if (kind < 8) return rng.bytes(len)
  // small patterns
  const out = new Uint8Array(len)
  const pat = rng.bytes(rng.int(1, 9))
  for (let i = 0; i < len; i++) out[i] = pat[i % pat.length]!
  return out
}

function writeRandom(rng: Rng, r: RegionModel): void {
  if (rng.chance(0.7)) {
    // whole chunk
    const i = rng.chance(0.1) ? r.chunks - 1 : rng.int(0, r.chunks)
    const len = chunkLen(r, i)
    const c = pageContent(rng, r, len)
    r.live.set(c, i * r.chunkSize)
    r.dirtySince.add(i)
    if (len === r.chunkSize && r.pool.length < 64 && rng.chance(0.5)) r.pool.push(c.slice())
  } else {
    // unaligned bytes, possibly across chunk boundaries, possibly up to the very end
    const len = rng.int(1, Math.min(r.size, 3 * r.chunkSize))
    const off = rng.chance(0.1) ? r.size - len : rng.int(0, r.size - len + 1)
    if (rng.chance(0.3)) r.live.fill(0, off, off + len)
    else r.live.set(rng.bytes(len), off)
    for (let i = Math.floor(off / r.chunkSize); i <= Math.floor((off + len - 1) / r.chunkSize); i++) r.dirtySince.add(i)
  }
}

function changedRuns(a: Uint8Array, b: Uint8Array, r: { size: number; chunkSize: number }, region: string): DiffEntry[] {
  const out: DiffEntry[] = []
  const chunks = Math.ceil(r.size / r.chunkSize)
  let run: { start: number; end: number } | undefined
  for (let i = 0; i < chunks; i++) {
    const s = i * r.chunkSize
    const e = s + chunkLen(r, i)
    if (Buffer.from(a.buffer, a.byteOffset + s, e - s).equals(Buffer.from(b.buffer, b.byteOffset + s, e - s))) continue
    if (run && run.end === i) run.end++
    else {
      if (run) out.push({ kind: 'chunks', region, start: run.start, end: run.end, chunkSize: r.chunkSize })
      run = { start: i, end: i + 1 }
    }
  }
  if (run) out.push({ kind: 'chunks', region, start: run.start, end: run.end, chunkSize: r.chunkSize })
  return out
}

function expectedDiff(a: Snapshot, b: Snapshot, geo: Record<'ram' | 'disk', { size: number; chunkSize: number }>): DiffEntry[] {
  const out: DiffEntry[] = [...changedRuns(a.regions.disk, b.regions.disk, geo.disk, 'disk'), ...changedRuns(a.regions.ram, b.regions.ram, geo.ram, 'ram')]
  const names = [...new Set([...Object.keys(a.blobs), ...Object.keys(b.blobs)])].sort()
  for (const n of names) {
    if (!a.blobs[n]) out.push({ kind: 'blob-added', blob: n })
    else if (!b.blobs[n]) out.push({ kind: 'blob-removed', blob: n })
    else if (!bytesEqual(a.blobs[n]!, b.blobs[n]!)) out.push({ kind: 'blob-changed', blob: n })
  }
  return out
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const x of it) out.push(x)
  return out
}

function bitmapOf(set: Iterable<number>, chunks: number): Uint8Array {
  const b = new Uint8Array(Math.ceil(chunks / 8))
  for (const i of set) b[i >> 3]! |= 1 << (i & 7)
  return b
}

const rootHex = (r: Uint8Array | null | undefined) => (r ? Buffer.from(r).toString('hex') : null)

interface Variant {
  name: string
  memory: boolean
  diskSize: number
  threads?: number
  seed: number
  steps: number
}

const VARIANTS: Variant[] = [
  { name: 'disk backend, disk 1 MiB', memory: false, diskSize: 1 << 20, seed: 1, steps: 60 },
  { name: 'memory backend, disk 1 MiB + 1000 B (short last chunk)', memory: true, diskSize: (1 << 20) + 1000, seed: 2, steps: 60 },
  { name: 'disk backend, disk 1 MiB + 1000 B, inline (no worker threads)', memory: false, diskSize: (1 << 20) + 1000, threads: 0, seed: 3, steps: 60 },
  { name: 'memory backend, disk 1 MiB', memory: true, diskSize: 1 << 20, seed: 4, steps: 60 },
]

describe('model-based checkpoints', () => {
  for (const v of VARIANTS) {
    it(v.name, async () => {
      const rng = makeRng(v.seed * 7919)
      const dir = v.memory ? 'memory:m' : tmpStorePath('ckpt-model-')
      const store: CkptStore = await openStore(dir, { memory: v.memory, threads: v.threads })
      try {
        const geo = { ram: RAM, disk: { size: v.diskSize, chunkSize: 65536 } }
        const tl: Timeline = await store.timeline('vm', { regions: geo })
        const mk = (name: 'ram' | 'disk'): RegionModel => ({
          name,
          ...geo[name],
          chunks: Math.ceil(geo[name].size / geo[name].chunkSize),
          live: new Uint8Array(geo[name].size),
          dirtySince: new Set(),
          pool: [],
        })
        const regions = { ram: mk('ram'), disk: mk('disk') }
        const snaps: Snapshot[] = []
        let committed: Record<'ram' | 'disk', Uint8Array> = { ram: new Uint8Array(RAM.size), disk: new Uint8Array(v.diskSize) }
        let blobs: Record<string, Uint8Array> = {}
        const blobPool: Uint8Array[] = []
        let vtime = BigInt(rng.int(1, 1000))
        const pending: Promise<void>[] = []
        const modes = new Map<string, number>()
        let firstDone = false

        for (let step = 0; step < v.steps; step++) {
          for (let w = rng.int(0, 14); w > 0; w--) writeRandom(rng, rng.chance(0.6) ? regions.ram : regions.disk)
          const input: { vtime: bigint | number; regions: Record<string, { data: Uint8Array; dirty?: unknown; stable?: boolean }>; blobs?: Record<string, Uint8Array>; meta?: Record<string, string> } = {
            vtime: rng.chance(0.5) ? vtime : Number(vtime),
            regions: {},
          }
          const next = { ...committed }
          let stable = false
          let expectChunks = 0
          for (const r of [regions.ram, regions.disk]) {
            if (rng.chance(0.15)) {
              modes.set('omitted', (modes.get('omitted') ?? 0) + 1)
              continue // carried over from the previous checkpoint; its writes stay pending
            }
            const mode = rng.pick(['exact', 'exact', 'bitmap', 'superset', 'full', 'full-stable'] as const)
            modes.set(mode, (modes.get(mode) ?? 0) + 1)
            const ri: { data: Uint8Array; dirty?: unknown; stable?: boolean } = { data: r.live }
            let listed = r.chunks
            if (mode === 'exact') {
              const list = rng.shuffle([...r.dirtySince])
              ri.dirty = rng.chance(0.3) ? Uint32Array.from(list) : list
              listed = list.length
            } else if (mode === 'bitmap') {
              ri.dirty = { bitmap: bitmapOf(r.dirtySince, r.chunks) }
              listed = r.dirtySince.size
            } else if (mode === 'superset') {
              const set = new Set(r.dirtySince)
              for (let k = rng.int(0, 20); k > 0; k--) set.add(rng.int(0, r.chunks))
              const list = [...set]
              // duplicates and any order are allowed
              for (let k = rng.int(0, 3); k > 0 && list.length > 0; k--) list.push(rng.pick(list))
              ri.dirty = rng.shuffle(list)
              listed = set.size
            } else if (mode === 'full-stable') {
              ri.stable = true
              stable = true
            }
            // the first checkpoint of a timeline scans everything, hints or not
            expectChunks += firstDone ? listed : r.chunks
            input.regions[r.name] = ri
            next[r.name] = r.live.slice()
            r.dirtySince.clear()
          }
          if (rng.chance(0.4)) {
            input.blobs = {}
            for (const n of BLOB_NAMES) {
              if (!rng.chance(0.5)) continue
              const b = blobPool.length > 0 && rng.chance(0.3) ? rng.pick(blobPool) : rng.bytes(rng.pick([0, 1, 100, 5000, rng.int(1, 70_000)]))
              input.blobs[n] = b
              blobPool.push(b)
            }
            blobs = { ...blobs, ...input.blobs }
          }
          if (rng.chance(0.2)) input.meta = { step: String(step) }
          const p = tl.checkpoint(input as never)
          const snapAt = snaps.length
          const snap: Snapshot = { vtime, cid: '', regions: next, blobs: { ...blobs } }
          snaps.push(snap)
          committed = next
          const done = p.then((c) => {
            snaps[snapAt]!.cid = c.cid.toString()
            expect(c.vtime).toBe(snap.vtime)
            expect(c.timeline).toBe('vm')
            const s = c.stats
            expect(s.chunks).toBe(expectChunks)
            expect(s.zeroChunks + s.unchangedChunks + s.dedupChunks + s.newChunks).toBe(s.chunks)
          })
          firstDone = true
          // stable buffers must not change until the checkpoint resolves; otherwise only until copied
          if (stable || rng.chance(0.3)) await done
          else {
            await p.copied
            pending.push(done)
          }
          vtime += BigInt(rng.chance(0.1) ? rng.int(1, 2 ** 31) : rng.int(1, 50))
        }
        await Promise.all(pending)
        // every mode was exercised
        for (const m of ['exact', 'bitmap', 'superset', 'full', 'full-stable', 'omitted']) expect(modes.get(m) ?? 0, m).toBeGreaterThan(0)

        // the log is the model's list
        const log = await collect(store.log('vm'))
        expect(log.map((e) => [e.vtime, e.cid.toString()])).toEqual(snaps.map((s) => [s.vtime, s.cid]))

        // every checkpoint restores byte-identical (into a dirty buffer: holes must be zeroed)
        const outPath = path.join(tmpDir('ckpt-model-out-'), 'region.img')
        fs.writeFileSync(outPath, Buffer.alloc(12345, 0xee)) // a stale file of another size
        const bufs = { ram: new Uint8Array(RAM.size), disk: new Uint8Array(v.diskSize) }
        for (let k = 0; k < snaps.length; k++) {
          const s = snaps[k]!
          for (const name of ['ram', 'disk'] as const) {
            bufs[name].fill(0xa5)
            const r = await store.restore(s.cid, name, bufs[name])
            expect(bytesEqual(bufs[name], s.regions[name]), `restore ${name} of checkpoint ${k}`).toBe(true)
            expect(r.bytes).toBeLessThanOrEqual(geo[name].size)
            if (k % 9 === 4) {
              await store.restore(s.cid, name, outPath)
              expect(bytesEqual(fs.readFileSync(outPath), s.regions[name]), `restore ${name} of checkpoint ${k} to a file`).toBe(true)
            }
            // random chunks, and the (maybe short) last one
            const chunks = Math.ceil(geo[name].size / geo[name].chunkSize)
            for (const i of [chunks - 1, rng.int(0, chunks), rng.int(0, chunks)]) {
              const c = await store.readChunk(s.cid, name, i)
              const start = i * geo[name].chunkSize
              expect(bytesEqual(c, s.regions[name].subarray(start, start + chunkLen(geo[name], i))), `chunk ${i} of ${name} at ${k}`).toBe(true)
            }
          }
          for (const [n, b] of Object.entries(s.blobs)) expect(bytesEqual(await store.readBlob(s.cid, n), b), `blob ${n} at ${k}`).toBe(true)
          const m = await store.manifest(s.cid)
          expect(Object.keys(m.blobs).sort()).toEqual(Object.keys(s.blobs).sort())
          expect(m.vtime).toBe(s.vtime)
          expect(rootHex(m.parent)).toBe(k === 0 ? null : rootHex(CID.parse(snaps[k - 1]!.cid).bytes))
          expect(await store.locate(s.cid)).toEqual({ timeline: 'vm', vtime: s.vtime })
        }

        // seek: the model's nearest at or before
        const queries = [0n, snaps[0]!.vtime - 1n, snaps[snaps.length - 1]!.vtime + 1n, 2n ** 64n - 1n]
        for (const s of snaps) queries.push(s.vtime, s.vtime + 1n)
        for (let q = 0; q < 40; q++) queries.push(BigInt(rng.int(0, Number(snaps[snaps.length - 1]!.vtime) + 10)))
        for (const q of queries) {
          const want = [...snaps].reverse().find((s) => s.vtime <= q)
          const got = await store.seek('vm', q)
          expect(got?.cid.toString(), `seek ${q}`).toBe(want?.cid)
          expect(got?.vtime).toBe(want?.vtime)
          if (want) expect((await store.resolve(`vm@${q}`)).toString()).toBe(want.cid)
        }
        expect((await store.resolve('vm')).toString()).toBe(snaps[snaps.length - 1]!.cid)

        // diff: exactly the chunks whose contents differ, and the blob changes
        const pairs: [number, number][] = [
          [0, snaps.length - 1],
          [snaps.length - 1, 0],
          [5, 5],
        ]
        for (let q = 0; q < 40; q++) pairs.push([rng.int(0, snaps.length), rng.int(0, snaps.length)])
        for (let q = 0; q + 1 < snaps.length; q += 3) pairs.push([q, q + 1])
        for (const [a, b] of pairs) {
          const got = await collect(store.diff(snaps[a]!.cid, snaps[b]!.cid))
          expect(got, `diff ${a} -> ${b}`).toEqual(expectedDiff(snaps[a]!, snaps[b]!, geo))
        }

        // canonical roots: the same contents checkpointed by a full scan in another timeline
        const other = await store.timeline('canon', { regions: geo })
        const picks = [...new Set([0, snaps.length - 1, ...Array.from({ length: 6 }, () => rng.int(0, snaps.length))])].sort((x, y) => x - y)
        let vt = 1
        for (const k of picks) {
          const s = snaps[k]!
          const c = await other.checkpoint({ vtime: vt++, regions: { ram: { data: s.regions.ram.slice() }, disk: { data: s.regions.disk.slice() } } })
          const mo = await store.manifest(c.cid)
          const mm = await store.manifest(s.cid)
          for (const name of ['ram', 'disk'] as const) {
            expect(rootHex(mo.regions[name]!.root), `root of ${name} at ${k}`).toBe(rootHex(mm.regions[name]!.root))
            expect(mo.regions[name]!.root === null).toBe(s.regions[name].every((x) => x === 0))
          }
          // different contents: different roots
          const j = picks.find((x) => !bytesEqual(snaps[x]!.regions.ram, s.regions.ram))
          if (j !== undefined) expect(rootHex((await store.manifest(snaps[j]!.cid)).regions.ram!.root)).not.toBe(rootHex(mo.regions.ram!.root))
        }
      } finally {
        await store.close()
      }
    })
  }
})
