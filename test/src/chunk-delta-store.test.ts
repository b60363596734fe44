/**
 * Chunk deltas as the library writes them (RegionInput.previous, SPEC.md §5.1 codec 4): a dirty
 * chunk whose previous version is given is stored against it where that is smaller, chains stay
 * within CHUNK_DELTA_MAX_DEPTH, and every path that reads chunks gives the exact bytes: restore (in memory
 * and to a file), time travel, verify --deep, a bundle round trip, thinning + gc, reopening.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { blake3 } from '../../codecs/blake3.js'
import { cidBytes, cidToString, RAW } from '../../codecs/cid.js'
import { AT_REST } from '../../codecs/compress.js'
import { ENTRY_HEADER_SIZE, ENTRY_KIND, scanPackFile } from '../../store/index.js'
import { CHUNK_DELTA_MAX_DEPTH as MAX_CHUNK_DEPTH } from '../../codecs/chunk-delta.js'
import { exportBundle, importBundle, memoryBackend, openStore, type CkptStore, type Timeline } from '../../src/index.js'
import { makeRng, type Rng } from '../helpers/rng.js'
import { flipByte } from '../helpers/damage.js'
import { caught, removeTmpDirs, tmpStorePath } from '../helpers/tmp.js'
import { runVerify } from '../helpers/verify.js'

afterAll(removeTmpDirs)

const CHUNK = 4096
const SIZE = 64 * CHUNK

/** Text-like content: compresses, and a few rewritten bytes leave most of a page as it was. */
function initial(rng: Rng): Uint8Array {
  const b = new Uint8Array(SIZE)
  for (let i = 0; i < SIZE; i++) b[i] = rng.chance(0.05) ? rng.int(0, 256) : 0x61 + rng.int(0, 12)
  return b
}

/** Rewrites a few bytes of `n` chunks (chunk 5 every time); returns the dirty list and their previous bytes. */
function step(rng: Rng, data: Uint8Array, n: number): { dirty: number[]; previous: Uint8Array } {
  const set = new Set([5])
  while (set.size < n) set.add(rng.int(0, 64))
  const dirty = [...set].sort((a, b) => a - b)
  const previous = new Uint8Array(dirty.length * CHUNK)
  dirty.forEach((c, k) => {
    previous.set(data.subarray(c * CHUNK, (c + 1) * CHUNK), k * CHUNK)
    for (let r = 0; r < 3; r++) data.set(rng.bytes(16), c * CHUNK + rng.int(0, CHUNK - 16))
  })
  return { dirty, previous }
}

function chunkEntries(dir: string): { codec: number; depth: number }[] {
  const out: { codec: number; depth: number }[] = []
  for (const f of fs.readdirSync(path.join(dir, 'packs')).filter((x) => x.endsWith('.pack'))) {
    for (const ev of scanPackFile(path.join(dir, 'packs', f), Number.parseInt(f, 10))) {
      if (ev.kind === 'entry' && ev.entry.kind === ENTRY_KIND.block && ev.entry.cid[1] === 0x55) out.push({ codec: ev.entry.codec, depth: ev.entry.depth })
    }
  }
  return out
}

/** A timeline of `k` checkpoints, each with previous bytes for its dirty chunks; the images and CIDs. */
async function record(tl: Timeline, rng: Rng, k: number): Promise<{ images: Uint8Array[]; cids: string[]; deltas: number }> {
  const data = initial(rng)
  const images = [data.slice()]
  const cids = [(await tl.checkpoint({ vtime: 0, regions: { ram: { data } } })).cid.toString()]
  let deltas = 0
  for (let v = 1; v < k; v++) {
    const { dirty, previous } = step(rng, data, 6)
    const c = await tl.checkpoint({ vtime: v, regions: { ram: { data, dirty, previous } } })
    deltas += c.stats.deltaChunks
    expect(c.stats.deltaBaseMismatches).toBe(0)
    images.push(data.slice())
    cids.push(c.cid.toString())
  }
  return { images, cids, deltas }
}

/** A fresh store (left open) with a timeline of `k` checkpoints recorded with previous bytes. */
async function recordedStore(prefix: string, seed: number, k: number): Promise<{ dir: string; store: CkptStore; images: Uint8Array[]; cids: string[]; deltas: number }> {
  const dir = tmpStorePath(prefix)
  const store = await openStore(dir, { threads: 2 })
  const tl = await store.timeline('t', { regions: { ram: { size: SIZE, chunkSize: CHUNK } } })
  return { dir, store, ...(await record(tl, makeRng(seed), k)) }
}

async function expectRestores(store: CkptStore, cids: string[], images: Uint8Array[], which: number[]): Promise<void> {
  for (const k of which) {
    const back = new Uint8Array(SIZE)
    await store.restore(cids[k]!, 'ram', back)
    expect(Buffer.from(back).equals(Buffer.from(images[k]!)), `checkpoint ${k}`).toBe(true)
  }
}

describe('chunk deltas written by the library', () => {
  it('changed pages with their previous bytes are stored as short chains that restore, travel and verify exactly', async () => {
    let { dir, store, images, cids, deltas } = await recordedStore('ckpt-chunkdelta-', 1, 30)
    await store.close()
    const entries = chunkEntries(dir)
    const asDelta = entries.filter((e) => e.codec === AT_REST.chunkDelta)
    expect(deltas).toBe(asDelta.length)
    // most changed pages are deltas (the first version of a page, and one at the depth limit, are whole)
    expect(asDelta.length).toBeGreaterThan((entries.length - 64) / 2)
    expect(Math.max(...asDelta.map((e) => e.depth))).toBe(MAX_CHUNK_DEPTH)

    store = await openStore(dir, { threads: 2 })
    try {
      await expectRestores(store, cids, images, [29, 0, 7, 15, 28])
      const file = path.join(dir, '..', `${path.basename(dir)}-ram.img`)
      await store.restore(cids[22]!, 'ram', file)
      expect(fs.readFileSync(file).equals(Buffer.from(images[22]!))).toBe(true)
      // time travel from a restored checkpoint to another: only changed chunks are read
      const back = new Uint8Array(SIZE)
      await store.restore(cids[10]!, 'ram', back)
      await store.restore(cids[26]!, 'ram', back, { from: cids[10]! })
      expect(Buffer.from(back).equals(Buffer.from(images[26]!))).toBe(true)
      const v = await runVerify(store, { deep: true })
      expect(v.findings).toEqual([])
      expect(v.summary.clean).toBe(true)
    } finally {
      await store.close()
    }
  })

  it('thinning and gc keep every base a kept checkpoint needs; a bundle carries the chunks whole', async () => {
    let { dir, store, images, cids, deltas } = await recordedStore('ckpt-chunkdelta-gc-', 2, 24)
    expect(deltas).toBeGreaterThan(20)
    // keep every fifth: the versions between are the bases of what is kept
    const drop = cids.filter((_, k) => k % 5 !== 0 && k !== 23)
    await store.rm(drop)
    // a plan that rewrites nothing drops the chunks staged anew: their old copies and bases stay
    const none = await store.gc({ threshold: 0, maxUnused: 1 })
    expect(none.chunksReencoded).toBe(0)
    expect(none.packsRewritten + none.packsDeleted).toBe(0)
    await expectRestores(store, cids, images, [5, 10, 23])
    // the removed checkpoints' blocks are still there (nothing rewritten): info findings only
    expect((await runVerify(store, { deep: true })).findings.filter((f) => f.severity !== 'info')).toEqual([])
    const dry = await store.gc({ threshold: 1, dryRun: true })
    expect(dry.chunksReencoded).toBe(0)
    expect(dry.baseOnlyBytes).toBeGreaterThan(0)
    const g = await store.gc({ threshold: 1 })
    expect(g.reclaimedBytes).toBeGreaterThan(0)
    expect(g.chunksReencoded).toBeGreaterThan(0)
    expect(g.chunkReencodedBytes).toBeGreaterThan(0)
    // no live chunk delta needs a dead base any more: a second gc stores nothing anew
    const again = await store.gc({ threshold: 1 })
    expect(again.chunksReencoded).toBe(0)
    expect(again.baseOnlyBytes).toBe(0)
    await store.close()
    const after = chunkEntries(dir)
    expect(after.some((e) => e.codec === AT_REST.chunkDelta)).toBe(true)
    expect(Math.max(...after.map((e) => e.depth))).toBeLessThanOrEqual(MAX_CHUNK_DEPTH)
    store = await openStore(dir, { threads: 2 })
    try {
      await expectRestores(store, cids, images, [0, 5, 10, 15, 20, 23])
      const v = await runVerify(store, { deep: true })
      expect(v.findings).toEqual([])
      const parts: Uint8Array[] = []
      for await (const p of exportBundle(store, [cids[23]!])) parts.push(p)
      const dst = await openStore(tmpStorePath('ckpt-chunkdelta-dst-'), { threads: 2 })
      try {
        await importBundle(dst, (async function* () { yield Buffer.concat(parts) })())
        await expectRestores(dst, cids, images, [23])
        expect((await runVerify(dst, { deep: true })).findings).toEqual([])
      } finally {
        await dst.close()
      }
    } finally {
      await store.close()
    }
  })

  it('an index rebuilt from the packs knows the store holds chunk deltas: a gc after it keeps what kept checkpoints need', async () => {
    let { dir, store, images, cids, deltas } = await recordedStore('ckpt-chunkdelta-rebuild-', 5, 16)
    expect(deltas).toBeGreaterThan(10)
    await store.close()
    fs.rmSync(path.join(dir, 'index'), { recursive: true, force: true })
    store = await openStore(dir, { threads: 2 })
    try {
      expect(store.openNotes.map((n) => n.kind)).toContain('index-rebuilt')
      await store.rm(cids.filter((_, k) => k % 3 !== 0 && k !== 15))
      const g = await store.gc({ threshold: 1 })
      expect(g.chunksReencoded).toBeGreaterThan(0)
      await expectRestores(store, cids, images, [0, 3, 6, 9, 12, 15])
      expect((await runVerify(store, { deep: true })).findings.filter((f) => f.severity !== 'info')).toEqual([])
    } finally {
      await store.close()
    }
  })

  it('a memory store (payloads read by the caller, not the workers) restores its chunk deltas exactly', async () => {
    const store = await openStore('memory:chunkdelta', { backend: memoryBackend(), threads: 2 })
    try {
      const tl = await store.timeline('t', { regions: { ram: { size: SIZE, chunkSize: CHUNK } } })
      const { images, cids, deltas } = await record(tl, makeRng(6), 10)
      expect(deltas).toBeGreaterThan(5)
      await expectRestores(store, cids, images, [9, 4, 0])
    } finally {
      await store.close()
    }
  })

  it('a damaged version down a chain fails the restore of every chunk built on it with an error naming that version', async () => {
    let { dir, store, images, cids } = await recordedStore('ckpt-chunkdelta-damage-', 4, 6)
    await store.close()
    // chunk 5 changes every checkpoint: its first version (stored whole) is the root of the chain
    const root = cidBytes(RAW, blake3(images[0]!.subarray(5 * CHUNK, 6 * CHUNK)))
    let hit: { file: string; at: number; stored: number } | undefined
    for (const f of fs.readdirSync(path.join(dir, 'packs')).filter((x) => x.endsWith('.pack'))) {
      for (const ev of scanPackFile(path.join(dir, 'packs', f), Number.parseInt(f, 10))) {
        if (ev.kind === 'entry' && Buffer.from(ev.entry.cid).equals(Buffer.from(root))) hit = { file: path.join(dir, 'packs', f), at: ev.entry.offset, stored: ev.entry.storedLength }
      }
    }
    expect(hit).toBeDefined()
    flipByte(hit!.file, hit!.at + ENTRY_HEADER_SIZE + Math.floor(hit!.stored / 2), 0x20)
    store = await openStore(dir, { threads: 2 })
    try {
      for (const k of [5, 3]) {
        const err = await caught(() => store.restore(cids[k]!, 'ram', new Uint8Array(SIZE)))
        expect(['CKPT_HASH_MISMATCH', 'CKPT_BAD_PACK'], err.message).toContain(err.code)
        expect(err.details?.cid, `checkpoint ${k}`).toBe(cidToString(root))
      }
      const chunk = await caught(() => store.readChunk(cids[5]!, 'ram', 5))
      expect(chunk.details?.cid).toBe(cidToString(root))
    } finally {
      await store.close()
    }
  })

  it('previous bytes that are not the previous version are not used; a wrong size or a full scan with previous is refused', async () => {
    const store = await openStore(tmpStorePath('ckpt-chunkdelta-bad-'), { threads: 2 })
    try {
      const tl = await store.timeline('t', { regions: { ram: { size: SIZE, chunkSize: CHUNK } } })
      const rng = makeRng(3)
      const data = initial(rng)
      await tl.checkpoint({ vtime: 0, regions: { ram: { data } } })
      let s = step(rng, data, 4)
      await tl.checkpoint({ vtime: 1, regions: { ram: { data, dirty: s.dirty, previous: s.previous } } })
      s = step(rng, data, 4)
      s.previous[100]! ^= 1 // not the bytes the store has for the first dirty chunk
      const c = await tl.checkpoint({ vtime: 2, regions: { ram: { data, dirty: s.dirty, previous: s.previous } } })
      expect(c.stats.deltaBaseMismatches).toBe(1)
      const back = new Uint8Array(SIZE)
      await store.restore(c.cid, 'ram', back)
      expect(Buffer.from(back).equals(Buffer.from(data))).toBe(true)
      const short = await caught(() => tl.checkpoint({ vtime: 3, regions: { ram: { data, dirty: [1, 2], previous: new Uint8Array(CHUNK) } } }))
      expect(short.code).toBe('CKPT_WRONG_SIZE')
      const noDirty = await caught(() => tl.checkpoint({ vtime: 3, regions: { ram: { data, previous: new Uint8Array(CHUNK) } } }))
      expect(noDirty.code).toBe('CKPT_BAD_ARGUMENT')
    } finally {
      await store.close()
    }
  })
})
