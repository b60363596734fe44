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
import { diskBackend, memoryBackend, openStore, type CkptStore, type DiffEntry, type Timeline } from '../../src/index.js'
import { collect } from '../helpers/bytes.js'
import { makeRng, type Rng } from '../helpers/rng.js'
import { bytesEqual, removeTmpDirs, tmpDir, tmpStorePath } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

const RAM = { size: 256 * 1024, chunkSize: 4096 }
/** 1,200 chunks of 512 B: a tree of height 2 (five leaves, the last one partial) */
const VRAM = { size: 600 * 1024, chunkSize: 512 }
type RegionName = 'ram' | 'disk' | 'vram'
const NAMES: RegionName[] = ['disk', 'ram', 'vram'] // sorted, the order diff reports regions in
const BLOB_NAMES = ['cpu', 'dev', 'vga.state'] as const

interface RegionModel {
  name: RegionName
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
  regions: Record<RegionName, Uint8Array>
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

function expectedDiff(a: Snapshot, b: Snapshot, geo: Record<RegionName, { size: number; chunkSize: number }>): DiffEntry[] {
  const out: DiffEntry[] = NAMES.flatMap((n) => changedRuns(a.regions[n], b.regions[n], geo[n], n))
  const names = [...new Set([...Object.keys(a.blobs), ...Object.keys(b.blobs)])].sort()
  for (const n of names) {
    if (!a.blobs[n]) out.push({ kind: 'blob-added', blob: n })
    else if (!b.blobs[n]) out.push({ kind: 'blob-removed', blob: n })
    else if (!bytesEqual(a.blobs[n]!, b.blobs[n]!)) out.push({ kind: 'blob-changed', blob: n })
  }
  return out
}

function bitmapOf(set: Iterable<number>, chunks: number): Uint8Array {
  const b = new Uint8Array(Math.ceil(chunks / 8))
  for (const i of set) b[i >> 3]! |= 1 << (i & 7)
  return b
}

const rootHex = (r: { bytes: Uint8Array } | Uint8Array | null | undefined) => (r ? Buffer.from(r instanceof Uint8Array ? r : r.bytes).toString('hex') : null)

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
      const store: CkptStore = await openStore(dir, { backend: v.memory ? memoryBackend() : diskBackend(), threads: v.threads })
      try {
        const geo: Record<RegionName, { size: number; chunkSize: number }> = { ram: RAM, disk: { size: v.diskSize, chunkSize: 65536 }, vram: VRAM }
        const tl: Timeline = await store.timeline('vm', { regions: geo })
        const mk = (name: RegionName): RegionModel => ({
          name,
          ...geo[name],
          chunks: Math.ceil(geo[name].size / geo[name].chunkSize),
          live: new Uint8Array(geo[name].size),
          dirtySince: new Set(),
          pool: [],
        })
        const regions = { ram: mk('ram'), disk: mk('disk'), vram: mk('vram') }
        const snaps: Snapshot[] = []
        let committed: Record<RegionName, Uint8Array> = { ram: new Uint8Array(RAM.size), disk: new Uint8Array(v.diskSize), vram: new Uint8Array(VRAM.size) }
        let blobs: Record<string, Uint8Array> = {}
        const blobPool: Uint8Array[] = []
        let vtime = BigInt(rng.int(1, 1000))
        const pending: Promise<void>[] = []
        const modes = new Map<string, number>()
        let firstDone = false

        for (let step = 0; step < v.steps; step++) {
          for (let w = rng.int(0, 18); w > 0; w--) writeRandom(rng, rng.pick([regions.ram, regions.ram, regions.disk, regions.vram]))
          const input: { vtime: bigint | number; regions: Record<string, { data: Uint8Array; dirty?: unknown; stable?: boolean }>; blobs?: Record<string, Uint8Array>; meta?: Record<string, string> } = {
            vtime: rng.chance(0.5) ? vtime : Number(vtime),
            regions: {},
          }
          const next = { ...committed }
          let stable = false
          let expectChunks = 0
          for (const r of [regions.ram, regions.disk, regions.vram]) {
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
              let b: Uint8Array
              if (blobPool.length > 0 && rng.chance(0.3)) b = rng.pick(blobPool)
              else if (blobPool.length > 0 && rng.chance(0.3)) {
                // an earlier blob with a few bytes inserted: content-defined chunks are mostly shared
                const base = rng.pick(blobPool)
                const at = rng.int(0, base.length + 1)
                b = Buffer.concat([base.subarray(0, at), rng.bytes(rng.int(1, 50)), base.subarray(at)])
              } else b = rng.bytes(rng.pick([0, 1, 100, 5000, rng.int(1, 70_000), rng.int(300_000, 700_000)]))
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
          // reads while later checkpoints are still in the pipeline
          const doneSnaps = snaps.filter((x) => x.cid !== '')
          if (doneSnaps.length > 0 && rng.chance(0.2)) {
            const old = rng.pick(doneSnaps)
            const name = rng.pick(NAMES)
            const out = new Uint8Array(geo[name].size)
            await store.restore(old.cid, name, out)
            expect(bytesEqual(out, old.regions[name]), `concurrent restore of ${name}`).toBe(true)
          }
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
        const bufs = { ram: new Uint8Array(RAM.size), disk: new Uint8Array(v.diskSize), vram: new Uint8Array(VRAM.size) }
        for (let k = 0; k < snaps.length; k++) {
          const s = snaps[k]!
          for (const name of NAMES) {
            bufs[name].fill(0xa5)
            const r = await store.restore(s.cid, name, bufs[name])
            expect(bytesEqual(bufs[name], s.regions[name]), `restore ${name} of checkpoint ${k}`).toBe(true)
            expect(r.bytesWritten).toBeLessThanOrEqual(geo[name].size)
            expect(r.size).toBe(geo[name].size)
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
          const c = await other.checkpoint({ vtime: vt++, regions: Object.fromEntries(NAMES.map((n) => [n, { data: s.regions[n].slice() }])) })
          const mo = await store.manifest(c.cid)
          const mm = await store.manifest(s.cid)
          for (const name of NAMES) {
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

describe('a tree of height 3', () => {
  it('65,537 chunks of 512 B: restore, readChunk, diff, holes and canonical roots across levels', async () => {
    const g = { size: 65537 * 512, chunkSize: 512 }
    const store = await openStore('memory:h3', { backend: memoryBackend() })
    try {
      const tl = await store.timeline('deep', { regions: { big: g } })
      const rng = makeRng(65537)
      const buf = new Uint8Array(g.size)
      const touched = [0, 1, 255, 256, 257, 65279, 65280, 65535, 65536, ...Array.from({ length: 40 }, () => rng.int(0, 65537))]
      const writeChunks = (idx: number[]) => {
        for (const i of idx) buf.set(rng.bytes(512), i * 512)
      }
      writeChunks(touched)
      const states: Uint8Array[] = []
      const cids: string[] = []
      const cp = async (vtime: number, dirty?: number[]) => {
        const c = await tl.checkpoint({ vtime, regions: { big: { data: buf, dirty } } })
        states.push(buf.slice())
        cids.push(c.cid.toString())
        return c
      }
      await cp(1)
      writeChunks([65536, 300, 256])
      await cp(2, [65536, 300, 256])
      // everything back to zero: the whole region is one hole
      buf.fill(0)
      await cp(3, [...new Set([...touched, 300])])
      // the first contents again, by dirty hints from the all-zero state
      buf.set(states[0]!)
      await cp(4, touched)

      const roots = await Promise.all(cids.map(async (c) => rootHex((await store.manifest(c)).regions.big!.root)))
      expect(roots[2]).toBeNull()
      expect(roots[3]).toBe(roots[0])
      expect(roots[1]).not.toBe(roots[0])
      const out = new Uint8Array(g.size)
      for (let k = 0; k < cids.length; k++) {
        out.fill(1)
        await store.restore(cids[k]!, 'big', out)
        expect(bytesEqual(out, states[k]!), `checkpoint ${k}`).toBe(true)
        for (const i of [0, 256, 65535, 65536, rng.int(0, 65537)]) {
          expect(bytesEqual(await store.readChunk(cids[k]!, 'big', i), states[k]!.subarray(i * 512, (i + 1) * 512))).toBe(true)
        }
      }
      for (const [a, b] of [
        [0, 1],
        [1, 0],
        [0, 2],
        [2, 3],
        [0, 3],
        [1, 3],
      ] as const) {
        const want = changedRuns(states[a]!, states[b]!, g, 'big')
        expect(await collect(store.diff(cids[a]!, cids[b]!)), `diff ${a} -> ${b}`).toEqual(want)
      }
      expect(await collect(store.diff(cids[0]!, cids[3]!))).toEqual([])
    } finally {
      await store.close()
    }
  })
})
