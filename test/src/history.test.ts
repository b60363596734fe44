/**
 * Page history (store.history, store.firstChange; SPEC.md §23.3) against brute force: every
 * checkpoint's selected bytes read with readChunk, compared consecutively (what `exact` must find), and
 * the bisection modelled on those bytes (what the default must find: equal ends hide what happened in
 * between). Timelines with holes, undone changes (A -> B -> A), byte ranges across chunks and leaves,
 * windows, reverse and limit, checkpoints removed and added between queries, a region missing or
 * resized in a hand-made checkpoint, a lazily pulled copy, and every refusal by its code.
 */
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { blake3 } from '../../codecs/blake3.js'
import { cidBytes, cidKey, cidToString, DAG_CBOR, RAW } from '../../codecs/cid.js'
import { compressBlock } from '../../codecs/compress.js'
import { encodeManifest } from '../../codecs/manifest.js'
import { openStore, type CkptStore, type HistoryEntry, type HistoryOptions, type HistorySelector } from '../../src/index.js'
import { collect } from '../helpers/bytes.js'
import { makeRng, type Rng } from '../helpers/rng.js'
import { caught, removeTmpDirs, tmpDir, tmpStorePath } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

const CHUNK = 512
/** 600 chunks: three leaves (256, 256, 88) at the fan-out these timelines take, so paths have two levels */
const CHUNKS = 600
const SIZE = CHUNKS * CHUNK - 100
const STEP = 10n

interface Built {
  store: CkptStore
  name: string
  vtimes: bigint[]
}

/**
 * A timeline of `n` checkpoints whose chunks change at random: new random bytes, zeros (holes), or
 * an older content of the same chunk back again (undoing a change); `edits(k, ram)` may add its own.
 */
async function build(store: CkptStore, name: string, n: number, rng: Rng, edits?: (k: number, ram: Buffer) => void): Promise<Built> {
  const tl = await store.timeline(name, { regions: { ram: { size: SIZE, chunkSize: CHUNK, fanout: 256 } } })
  const ram = Buffer.alloc(SIZE)
  const past = new Map<number, Buffer[]>()
  const vtimes: bigint[] = []
  for (let k = 0; k < n; k++) {
    const dirty = new Set<number>()
    const count = k === 0 ? 0 : rng.int(1, 12)
    for (let d = 0; d < count; d++) {
      // a few chunks (0..7, 250..260) change often; any other now and then
      const i = rng.chance(0.6) ? rng.pick([0, 1, 2, 3, 4, 5, 6, 7, 250, 255, 256, 257, 260]) : rng.int(0, CHUNKS)
      const len = i === CHUNKS - 1 ? SIZE - i * CHUNK : CHUNK
      const old = past.get(i) ?? []
      let content: Buffer
      const r = rng.float()
      if (r < 0.2) content = Buffer.alloc(len)
      else if (r < 0.4 && old.length) content = rng.pick(old)
      else if (r < 0.55) {
        // one byte of the chunk changes: a byte range elsewhere in it must not see a change
        content = Buffer.from(ram.subarray(i * CHUNK, i * CHUNK + len))
        content[rng.int(0, len)] = rng.int(1, 256)
      } else content = Buffer.from(rng.bytes(len))
      ram.set(content, i * CHUNK)
      old.push(content)
      past.set(i, old)
      dirty.add(i)
    }
    edits?.(k, ram)
    const vtime = BigInt(k) * STEP + 5n
    await tl.checkpoint({ vtime, regions: { ram: { data: ram } } })
    vtimes.push(vtime)
  }
  return { store, name, vtimes }
}

/** The chunk range a selector covers (of the full region shape). */
function chunkRange(sel: HistorySelector): [number, number] {
  if (typeof sel === 'number') return [sel, sel]
  return [Math.floor(sel.offset / CHUNK), Math.floor((sel.offset + (sel.length ?? 1) - 1) / CHUNK)]
}

function chunkCid(bytes: Uint8Array): string | null {
  return bytes.every((b) => b === 0) ? null : cidToString(cidBytes(RAW, blake3(bytes)))
}

interface Point {
  vtime: bigint
  cid: string
  /** the selected chunks' CIDs as computed from their bytes (null: a hole) */
  chunks: (string | null)[]
  /** per selected chunk, the selected bytes in it (hex): what a change is judged on */
  parts: string[]
}

/** Every checkpoint of the timeline with its selected chunks, read one by one (readChunk). */
async function points(store: CkptStore, name: string, sel: HistorySelector): Promise<Point[]> {
  const [first, last] = chunkRange(sel)
  const [from, to] = typeof sel === 'number' ? [sel * CHUNK, Math.min(SIZE, (sel + 1) * CHUNK)] : [sel.offset, sel.offset + (sel.length ?? 1)]
  const out: Point[] = []
  for await (const e of store.log(name)) {
    const chunks: (string | null)[] = []
    const parts: string[] = []
    for (let i = first; i <= last; i++) {
      const bytes = await store.readChunk(e.cid, 'ram', i)
      chunks.push(chunkCid(bytes))
      parts.push(Buffer.from(bytes.subarray(Math.max(from, i * CHUNK) - i * CHUNK, Math.min(to, (i + 1) * CHUNK) - i * CHUNK)).toString('hex'))
    }
    out.push({ vtime: e.vtime, cid: e.cid.toString(), chunks, parts })
  }
  return out
}

/** equal selected bytes (a chunk changed outside the selection is not a change) */
const same = (a: Point, b: Point) => a.parts.every((c, k) => c === b.parts[k])

/** What history must say: the baseline, then the changes (every consecutive pair when exact; else the bisection on the bytes). */
function expected(all: Point[], sel: HistorySelector, opts: HistoryOptions = {}): { vtime: bigint; cid: string; previous: string | null; chunks: { index: number; before: string | null; after: string | null }[] }[] {
  const [first] = chunkRange(sel)
  const w = all.filter((p) => (opts.after === undefined || p.vtime > BigInt(opts.after)) && (opts.until === undefined || p.vtime <= BigInt(opts.until)))
  if (w.length === 0) return []
  const changes: number[] = []
  if (opts.exact) {
    for (let i = 1; i < w.length; i++) if (!same(w[i - 1]!, w[i]!)) changes.push(i)
  } else {
    const visit = (a: number, b: number) => {
      if (b <= a || same(w[a]!, w[b]!)) return
      if (b === a + 1) return void changes.push(b)
      const mid = (a + b) >>> 1
      visit(a, mid)
      visit(mid, b)
    }
    visit(0, w.length - 1)
  }
  const entry = (i: number, prev: number | null) => ({
    vtime: w[i]!.vtime,
    cid: w[i]!.cid,
    previous: prev === null ? null : w[prev]!.cid,
    chunks: w[i]!.chunks
      .map((c, k) => ({ index: first + k, before: prev === null ? null : w[prev]!.chunks[k]!, after: c, differs: prev === null || w[prev]!.parts[k] !== w[i]!.parts[k] }))
      .filter((c) => c.differs)
      .map(({ index, before, after }) => ({ index, before, after })),
  })
  let out = [entry(0, null), ...changes.map((i) => entry(i, i - 1))]
  if (opts.reverse) out = [...out.slice(1).reverse(), out[0]!]
  return opts.limit === undefined ? out : out.slice(0, opts.limit)
}

/** An entry as plain strings, for comparisons whose failures read well. */
function plain(e: HistoryEntry) {
  return {
    vtime: e.vtime,
    cid: e.cid.toString(),
    previous: e.previous ? e.previous.cid.toString() : null,
    chunks: e.chunks.map((c) => ({ index: c.index, before: c.before?.toString() ?? null, after: c.after?.toString() ?? null })),
  }
}

async function historyOf(store: CkptStore, name: string, sel: HistorySelector, opts: HistoryOptions = {}) {
  return (await collect(store.history(name, 'ram', sel, opts))).map(plain)
}

const SELECTORS: HistorySelector[] = [
  0,
  3,
  255,
  256,
  400,
  CHUNKS - 1,
  { offset: 3 * CHUNK + 17 }, // one byte
  { offset: 2 * CHUNK + 500, length: 30 }, // across chunks 2 and 3
  { offset: 255 * CHUNK + 10, length: CHUNK + 20 }, // across a leaf boundary (255, 256, 257)
  { offset: (CHUNKS - 1) * CHUNK, length: SIZE - (CHUNKS - 1) * CHUNK }, // the short last chunk
  { offset: 0, length: SIZE }, // the whole region
]

describe('history and firstChange against brute force', () => {
  let store: CkptStore
  let t: Built
  const cache = new Map<string, Point[]>()
  const pts = async (sel: HistorySelector) => {
    const k = JSON.stringify(sel)
    if (!cache.has(k)) cache.set(k, await points(store, t.name, sel))
    return cache.get(k)!
  }

  beforeAll(async () => {
    store = await openStore(tmpStorePath('ckpt-history-'), { threads: 0 })
    t = await build(store, 'tl', 48, makeRng(11))
  })
  afterAll(() => store?.close())

  it('exact finds every change of every selection: the baseline, then each checkpoint whose selected chunks differ from the one before', async () => {
    let changes = 0
    for (const sel of SELECTORS) {
      const got = await historyOf(store, t.name, sel, { exact: true })
      expect(got, JSON.stringify(sel)).toEqual(expected(await pts(sel), sel, { exact: true }))
      changes += got.length - 1
    }
    expect(changes).toBeGreaterThan(100)
  })

  it('bisection finds what comparing the ends of each interval finds (and all of it where content never comes back)', async () => {
    let missed = 0
    for (const sel of SELECTORS) {
      const all = await pts(sel)
      const got = await historyOf(store, t.name, sel)
      expect(got, JSON.stringify(sel)).toEqual(expected(all, sel))
      missed += expected(all, sel, { exact: true }).length - got.length
    }
    // the timeline undoes changes, so bisection misses some: the test would not tell the two apart otherwise
    expect(missed).toBeGreaterThan(0)
  })

  it('windows (after < vtime <= until), reverse and limit', async () => {
    const rng = makeRng(3)
    for (let k = 0; k < 40; k++) {
      const sel = rng.pick(SELECTORS)
      const a = rng.chance(0.3) ? undefined : BigInt(rng.int(0, 500))
      const u = rng.chance(0.3) ? undefined : (a ?? 0n) + BigInt(rng.int(0, 500))
      const opts: HistoryOptions = { after: a, until: u, exact: rng.chance(0.5), reverse: rng.chance(0.5), limit: rng.chance(0.5) ? rng.int(0, 6) : undefined }
      expect(await historyOf(store, t.name, sel, opts), JSON.stringify({ sel, ...opts }, (_, v) => (typeof v === 'bigint' ? v.toString() : v))).toEqual(expected(await pts(sel), sel, opts))
    }
    // numbers are vtimes too; a window with no checkpoint yields nothing
    expect(await historyOf(store, t.name, 3, { after: 6, until: 15 })).toEqual(expected(await pts(3), 3, { after: 6n, until: 15n }))
    expect(await historyOf(store, t.name, 3, { after: 6, until: 6 })).toEqual([])
    expect(await historyOf(store, t.name, 3, { after: 10_000 })).toEqual([])
  })

  it('firstChange: the first checkpoint after `after` whose bytes differ from those at or before it (exact: a scan; default: a binary search)', async () => {
    const rng = makeRng(4)
    for (let k = 0; k < 60; k++) {
      const sel = rng.pick(SELECTORS)
      const all = await pts(sel)
      const after = rng.chance(0.2) ? undefined : BigInt(rng.int(0, 480))
      const until = rng.chance(0.3) ? undefined : (after ?? 0n) + BigInt(rng.int(0, 480))
      let base = 0
      if (after !== undefined) for (let i = 0; i < all.length; i++) if (all[i]!.vtime <= after) base = i
      const cands = all.map((p, i) => i).filter((i) => i > base && (after === undefined || all[i]!.vtime > after) && (until === undefined || all[i]!.vtime <= until))
      // exact: the first candidate that differs from the baseline
      const exactHit = cands.find((i) => !same(all[base]!, all[i]!))
      // bisection: the last candidate decides; then a binary search keeping "lo equals the baseline"
      let bisectHit: number | undefined
      if (cands.length && !same(all[base]!, all[cands.at(-1)!]!)) {
        let lo = cands[0]! - 1
        let hi = cands.at(-1)!
        while (hi - lo > 1) {
          const mid = (lo + hi) >>> 1
          if (same(all[base]!, all[mid]!)) lo = mid
          else hi = mid
        }
        bisectHit = hi
      }
      for (const [exact, hit] of [[true, exactHit], [false, bisectHit]] as const) {
        const r = await store.firstChange(t.name, 'ram', sel, { after, until, exact })
        const what = JSON.stringify({ sel, after: after?.toString(), until: until?.toString(), exact })
        if (hit === undefined) expect(r, what).toBeUndefined()
        else {
          expect(r && plain(r), what).toEqual({
            vtime: all[hit]!.vtime,
            cid: all[hit]!.cid,
            previous: all[hit - 1]!.cid,
            chunks: all[hit]!.chunks
              .map((c, j) => ({ index: chunkRange(sel)[0] + j, before: all[hit - 1]!.chunks[j]!, after: c, differs: all[hit - 1]!.parts[j] !== all[hit]!.parts[j] }))
              .filter((c) => c.differs)
              .map(({ index, before, after }) => ({ index, before, after })),
          })
          // the checkpoint before it holds the baseline's bytes
          expect(same(all[hit - 1]!, all[base]!), what).toBe(true)
        }
      }
    }
  })

  it('a chunk whose leaf never changes is answered from the roots: no leaf is read', async () => {
    const s2 = await openStore(tmpStorePath('ckpt-history-roots-'), { threads: 0 })
    try {
      // chunk 300 (leaf 1) is written once; only leaf 0's chunks change afterwards
      const b = await build(s2, 'quiet', 20, makeRng(5), (_, ram) => {
        ram.fill(0, 256 * CHUNK, SIZE)
        ram.fill(7, 300 * CHUNK, 301 * CHUNK)
      })
      const ctx = s2.context()
      const roots = new Set<string>()
      for await (const e of s2.log(b.name)) roots.add(cidKey((await ctx.manifestOf((await s2.resolve(e.cid)).bytes)).regions.ram!.root!))
      const blocks = ctx.repo.blocks
      const read: string[] = []
      const getNode = blocks.getNode.bind(blocks)
      blocks.getNode = (cid) => {
        read.push(cidKey(cid))
        return getNode(cid)
      }
      const h = await collect(s2.history(b.name, 'ram', 300, { exact: true }))
      blocks.getNode = getNode
      expect(h).toHaveLength(1)
      expect(h[0]!.chunks[0]!.after?.toString()).toBe(chunkCid(Buffer.alloc(CHUNK, 7)))
      // the baseline reads one leaf; every comparison after it ends at the root's equal slot
      expect(read.filter((k) => !roots.has(k))).toHaveLength(1)
    } finally {
      await s2.close()
    }
  })
})

describe('undone changes (A -> B -> A)', () => {
  let store: CkptStore
  const A = Buffer.alloc(CHUNK, 0xaa)
  const B = Buffer.alloc(CHUNK, 0xbb)

  beforeAll(async () => {
    store = await openStore(tmpStorePath('ckpt-history-undo-'), { threads: 0 })
    const tl = await store.timeline('undo', { regions: { ram: { size: SIZE, chunkSize: CHUNK, fanout: 256 } } })
    const ram = Buffer.alloc(SIZE)
    // chunk 5: A, B, A, A, C; chunk 6: a hole, data, a hole
    const five = [A, B, A, A, Buffer.alloc(CHUNK, 0xcc)]
    for (let k = 0; k < 5; k++) {
      ram.set(five[k]!, 5 * CHUNK)
      ram.fill(k === 1 ? 1 : 0, 6 * CHUNK, 7 * CHUNK)
      await tl.checkpoint({ vtime: k * 10, regions: { ram: { data: ram } } })
    }
  })
  afterAll(() => store?.close())

  it('exact sees the change and its undoing; bisection sees neither when the ends of the window are equal', async () => {
    const h = async (sel: HistorySelector, opts: HistoryOptions) => (await collect(store.history('undo', 'ram', sel, opts))).map((e) => e.vtime)
    expect(await h(5, { exact: true, until: 30 })).toEqual([0n, 10n, 20n])
    expect(await h(5, { until: 30 })).toEqual([0n])
    expect(await h(5, { until: 20 })).toEqual([0n])
    // over the whole timeline the ends differ: bisection finds the change at 40, not the undone one
    expect(await h(5, {})).toEqual([0n, 40n])
    expect(await h(5, { exact: true })).toEqual([0n, 10n, 20n, 40n])
    // a hole that gets data and becomes a hole again: before/after null are the holes
    const six = await collect(store.history('undo', 'ram', 6, { exact: true }))
    expect(six.map((e) => e.vtime)).toEqual([0n, 10n, 20n])
    expect(six[0]!.chunks).toEqual([{ index: 6, before: null, after: null }])
    expect(six[1]!.chunks[0]).toMatchObject({ index: 6, before: null })
    expect(six[1]!.chunks[0]!.after).not.toBeNull()
    expect(six[2]!.chunks[0]).toMatchObject({ after: null })
    expect(await h(6, {})).toEqual([0n])
  })

  it('firstChange: exact finds the undone change; bisection answers from the window end, then a binary search', async () => {
    expect((await store.firstChange('undo', 'ram', 5, { exact: true, until: 30 }))?.vtime).toBe(10n)
    expect(await store.firstChange('undo', 'ram', 5, { until: 30 })).toBeUndefined()
    expect((await store.firstChange('undo', 'ram', 5, {}))?.vtime).toBe(40n)
    // after 15: the baseline is the checkpoint at 10 (B); 20 is already A again
    expect((await store.firstChange('undo', 'ram', 5, { after: 15 }))?.vtime).toBe(20n)
    const r = await store.firstChange('undo', 'ram', { offset: 5 * CHUNK + 100, length: 2 * CHUNK }, { after: 15, exact: true })
    expect(r?.vtime).toBe(20n)
    expect(r?.previous?.vtime).toBe(10n)
    expect(r?.chunks.map((c) => c.index)).toEqual([5, 6])
    // no checkpoint after the last one
    expect(await store.firstChange('undo', 'ram', 5, { after: 40 })).toBeUndefined()
    // `after` before the first checkpoint: the first checkpoint is the baseline
    expect((await store.firstChange('undo', 'ram', 6, { exact: true }))?.vtime).toBe(10n)
  })
})

describe('the catalog changes between queries', () => {
  it('removed, thinned and added checkpoints are seen by the next query (history is of the catalogued checkpoints)', async () => {
    const store = await openStore(tmpStorePath('ckpt-history-rm-'), { threads: 0 })
    try {
      const rng = makeRng(21)
      const t = await build(store, 'tl', 24, rng)
      for (const sel of [0, 256, { offset: 0, length: SIZE }] as HistorySelector[]) {
        expect(await historyOf(store, t.name, sel, { exact: true })).toEqual(expected(await points(store, t.name, sel), sel, { exact: true }))
      }
      await store.rm(t.vtimes.filter((_, k) => k % 3 === 1).map((v) => `${t.name}@${v}`))
      await store.thin(t.name, 'last=10')
      let n = 0
      for await (const _ of store.log(t.name)) n++
      expect(n).toBe(10)
      for (const sel of [0, 256, { offset: 0, length: SIZE }] as HistorySelector[]) {
        expect(await historyOf(store, t.name, sel, { exact: true })).toEqual(expected(await points(store, t.name, sel), sel, { exact: true }))
        expect(await historyOf(store, t.name, sel)).toEqual(expected(await points(store, t.name, sel), sel))
      }
      // more checkpoints on the timeline
      const tl = await store.timeline(t.name)
      const ram = Buffer.alloc(SIZE)
      await store.restore(t.name, 'ram', ram)
      ram.fill(9, 0, CHUNK)
      await tl.checkpoint({ vtime: 100_000, regions: { ram: { data: ram } } })
      const h = await historyOf(store, t.name, 0, { exact: true })
      expect(h.at(-1)!.vtime).toBe(100_000n)
      expect(h).toEqual(expected(await points(store, t.name, 0), 0, { exact: true }))
    } finally {
      await store.close()
    }
  })

  it('a checkpoint whose region is missing or resized counts as a change, flagged, its chunks null', async () => {
    const store = await openStore(tmpStorePath('ckpt-history-shape-'), { threads: 0 })
    try {
      const t = await build(store, 'tl', 6, makeRng(8), (k, ram) => ram.fill(k + 1, 0, CHUNK))
      const ctx = store.context()
      const repo = ctx.repo
      const head = await store.resolve(t.name)
      const m = await ctx.manifestOf(head.bytes)
      // hand-made checkpoints the library would never write: the region missing, then another size
      const add = async (vtime: bigint, regions: typeof m.regions, parent: Uint8Array) => {
        const bytes = encodeManifest({ ...m, vtime, parent, regions })
        const cid = cidBytes(DAG_CBOR, blake3(bytes))
        const c = compressBlock(repo.blocks.compressor, bytes)
        repo.blocks.put(cid, c.code, c.bytes, bytes.length)
        await repo.commit(repo.putCheckpointOps({ timeline: t.name, vtime, cid }))
        return cid
      }
      const missing = await add(1000n, {}, head.bytes)
      const resized = await add(1010n, { ram: { ...m.regions.ram!, size: SIZE - CHUNK, root: null } }, missing)
      await add(1020n, m.regions, resized)
      const h = await collect(store.history(t.name, 'ram', { offset: 0, length: 2 * CHUNK }))
      const tail = h.slice(-3)
      expect(tail.map((e) => [e.vtime, e.shape])).toEqual([[1000n, 'missing'], [1010n, 'resized'], [1020n, undefined]])
      expect(tail[0]!.chunks.map((c) => [c.index, c.after])).toEqual([[0, null], [1, null]])
      expect(tail[0]!.chunks[0]!.before?.toString()).toBe(chunkCid(Buffer.alloc(CHUNK, 6)))
      expect(tail[2]!.chunks.map((c) => c.before)).toEqual([null, null])
      expect(tail[2]!.chunks[0]!.after?.toString()).toBe(chunkCid(Buffer.alloc(CHUNK, 6)))
      const e = await collect(store.history(t.name, 'ram', 0, { exact: true }))
      expect(e.map((x) => x.vtime)).toEqual([...t.vtimes, 1000n, 1010n, 1020n])
      expect((await store.firstChange(t.name, 'ram', 0, { after: t.vtimes.at(-1)!, exact: true }))?.shape).toBe('missing')
      // bisection: the window's end holds the baseline's bytes again, so it sees no change
      expect(await store.firstChange(t.name, 'ram', 0, { after: t.vtimes.at(-1)! })).toBeUndefined()
      expect((await store.firstChange(t.name, 'ram', 0, { after: t.vtimes.at(-1)!, until: 1010 }))?.shape).toBe('missing')
    } finally {
      await store.close()
    }
  })
})

describe('a lazily pulled timeline', () => {
  it('answers as the original does, its blocks read from the remote', async () => {
    const origin = await openStore(tmpStorePath('ckpt-history-origin-'), { threads: 0 })
    const url = pathToFileURL(path.join(tmpDir('ckpt-history-remote-'), 'r')).href
    const lazy = await openStore(tmpStorePath('ckpt-history-lazy-'), { threads: 0 })
    try {
      await build(origin, 'tl', 16, makeRng(31))
      await origin.push(url)
      const s = await lazy.pull(url, ['tl'], { lazy: true })
      expect(s.blocks).toBe(0)
      for (const sel of [0, 255, { offset: 250 * CHUNK, length: 10 * CHUNK }] as HistorySelector[]) {
        for (const exact of [false, true]) expect(await historyOf(lazy, 'tl', sel, { exact })).toEqual(await historyOf(origin, 'tl', sel, { exact }))
        expect((await lazy.firstChange('tl', 'ram', sel, { after: 50 }))?.cid.toString()).toBe((await origin.firstChange('tl', 'ram', sel, { after: 50 }))?.cid.toString())
      }
    } finally {
      await lazy.close()
      await origin.close()
    }
  })
})

describe('refusals', () => {
  let store: CkptStore
  beforeAll(async () => {
    store = await openStore(tmpStorePath('ckpt-history-err-'), { threads: 0 })
    await build(store, 'tl', 3, makeRng(1))
    const gone = await build(store, 'empty', 2, makeRng(2))
    await store.rm(gone.vtimes.map((v) => `empty@${v}`))
  })
  afterAll(() => store?.close())

  const code = async (fn: () => unknown) => {
    const e = await caught(fn)
    return e instanceof TypeError ? 'TypeError' : e.code
  }
  const drain = (sel: HistorySelector, opts: HistoryOptions = {}, name = 'tl', region = 'ram') => () => collect(store.history(name, region, sel, opts))

  it('by code, from history and firstChange alike', async () => {
    const cases: [string, HistorySelector, HistoryOptions, string?, string?][] = [
      ['CKPT_NOT_FOUND', 0, {}, 'nope'],
      ['CKPT_BAD_ARGUMENT', 0, {}, 'bad name!'],
      ['CKPT_UNKNOWN_REGION', 0, {}, 'tl', 'disk'],
      ['CKPT_OUT_OF_RANGE', CHUNKS, {}],
      ['CKPT_OUT_OF_RANGE', -1, {}],
      ['CKPT_BAD_ARGUMENT', 1.5, {}],
      ['CKPT_OUT_OF_RANGE', { offset: SIZE - 10, length: 11 }, {}],
      ['CKPT_OUT_OF_RANGE', { offset: SIZE }, {}],
      ['CKPT_BAD_ARGUMENT', { offset: -1 }, {}],
      ['CKPT_BAD_ARGUMENT', { offset: 0, length: 0 }, {}],
      ['CKPT_BAD_ARGUMENT', 0, { after: 20, until: 10 }],
      ['CKPT_BAD_ARGUMENT', 0, { after: -1 }],
      ['CKPT_BAD_ARGUMENT', 0, { until: 2 ** 60 }],
      ['TypeError', 'x' as unknown as number, {}],
      ['TypeError', { offset: '0' } as unknown as HistorySelector, {}],
      ['TypeError', 0, { exact: 1 as unknown as boolean }],
    ]
    for (const [want, sel, opts, name, region] of cases) {
      const what = JSON.stringify({ sel, opts, name, region })
      expect(await code(drain(sel, opts, name, region)), what).toBe(want)
      expect(await code(() => store.firstChange(name ?? 'tl', region ?? 'ram', sel, opts)), what).toBe(want)
    }
    expect(await code(drain(0, { limit: -1 }))).toBe('CKPT_BAD_ARGUMENT')
    expect(await code(drain(0, { limit: 1.5 }))).toBe('CKPT_BAD_ARGUMENT')
  })

  it('a timeline whose checkpoints were all removed has no history; limit 0 none either', async () => {
    expect(await collect(store.log('empty'))).toEqual([])
    expect(await collect(store.history('empty', 'ram', 0))).toEqual([])
    expect(await store.firstChange('empty', 'ram', 0)).toBeUndefined()
    expect(await collect(store.history('tl', 'ram', 0, { limit: 0 }))).toEqual([])
  })

  it('a closed store: CKPT_CLOSED', async () => {
    const s = await openStore(tmpStorePath('ckpt-history-closed-'), { threads: 0 })
    await build(s, 'tl', 2, makeRng(2))
    await s.close()
    expect(await code(() => collect(s.history('tl', 'ram', 0)))).toBe('CKPT_CLOSED')
    expect(await code(() => s.firstChange('tl', 'ram', 0))).toBe('CKPT_CLOSED')
  })
})
