/**
 * The restore's fast paths (src/restore-jobs.ts, src/pipeline/read-entries.ts): chunks that repeat in
 * a region are read, decompressed and hashed once and copied to their other places; holes in a shared
 * buffer are zero-filled by the workers; a file is written with coalesced pwritevs. Every destination
 * must still get the exact bytes, and a damaged chunk that repeats must still fail the restore with
 * CKPT_HASH_MISMATCH naming it.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { blake3, cidBytes, cidToString, RAW } from '../../codecs/index.js'
import { ENTRY_HEADER_SIZE } from '../../codecs/pack-format.js'
import { openStore, type CkptStore } from '../../src/index.js'
import { readJob, type Job } from '../../src/restore.js'
import { Geometry } from '../../src/region-tree.js'

const dirs: string[] = []
const stores: CkptStore[] = []
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-rsp-'))
  dirs.push(d)
  return d
}
afterEach(async () => {
  for (const s of stores.splice(0)) await s.close()
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true })
})

function rng(seed: number): () => number {
  let x = seed >>> 0 || 1
  return () => {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    return (x >>>= 0)
  }
}

const PAGE = 4096
/** 3,000 distinct random pages (more than one index batch, several jobs), each placed 1-3 times far apart, the rest holes */
function image(pages: number, distinct: number, seed: number): Buffer {
  const r = rng(seed)
  const pool = Buffer.alloc(distinct * PAGE)
  for (let i = 0; i < pool.length; i += 4) pool.writeUInt32LE(r(), i)
  const img = Buffer.alloc(pages * PAGE)
  for (let p = 0; p < pages; p++) {
    const u = r() % 10
    if (u < 3) continue // a hole
    const k = u < 6 ? p % distinct : r() % distinct
    pool.copy(img, p * PAGE, k * PAGE, k * PAGE + PAGE)
  }
  return img
}

function sink(): { chunks: Buffer[]; write(b: Uint8Array): Promise<void> } {
  const chunks: Buffer[] = []
  return { chunks, write: async (b) => void chunks.push(Buffer.from(b)) }
}

async function setup(pages = 8192, distinct = 3000) {
  const dir = tmp()
  const img = image(pages, distinct, 7)
  let store = await openStore(path.join(dir, 's'))
  const tl = await store.timeline('t', { regions: { ram: { size: img.length, chunkSize: PAGE } } })
  const c = await tl.checkpoint({ vtime: 0, regions: { ram: { data: img } } })
  await store.close()
  store = await openStore(path.join(dir, 's'))
  stores.push(store)
  return { dir, img, store, ref: c.cid.toString() }
}

describe('restore of a region whose chunks repeat', () => {
  it('gives the exact bytes into shared and plain buffers, a file and a stream', async () => {
    const { dir, img, store, ref } = await setup()
    const shared = Buffer.from(new SharedArrayBuffer(img.length))
    shared.fill(0xa5) // holes must be zero-filled over old content
    const r = await store.restore(ref, 'ram', shared)
    expect(shared.equals(img)).toBe(true)
    let stored = 0
    for (let p = 0; p < img.length / PAGE; p++) if (img.subarray(p * PAGE, p * PAGE + PAGE).some((b) => b !== 0)) stored++
    expect(r.chunksWritten).toBe(stored)
    expect(r.bytesWritten).toBe(stored * PAGE)
    expect(r.holes).toBe(img.length / PAGE - stored)

    const plain = Buffer.alloc(img.length, 0x5a)
    await store.restore(ref, 'ram', plain)
    expect(plain.equals(img)).toBe(true)

    const file = path.join(dir, 'ram.img')
    fs.writeFileSync(file, Buffer.alloc(100, 1)) // replaced whole
    await store.restore(ref, 'ram', file)
    expect(fs.readFileSync(file).equals(img)).toBe(true)

    const s = sink()
    await store.restore(ref, 'ram', s)
    expect(Buffer.concat(s.chunks).equals(img)).toBe(true)
  })

  it('a region of holes only, and one with a few chunks, zero-fill old content in a shared buffer', async () => {
    const dir = tmp()
    const store = await openStore(path.join(dir, 's'))
    stores.push(store)
    const size = 24 << 20 // more holes than the jobs take at once (8 MiB each)
    const tl = await store.timeline('t', { regions: { a: { size, chunkSize: PAGE }, b: { size, chunkSize: PAGE } } })
    const b = Buffer.alloc(size)
    b.fill(7, 5 * PAGE, 6 * PAGE)
    b.fill(9, size - PAGE, size)
    const c = await tl.checkpoint({ vtime: 0, regions: { a: { data: Buffer.alloc(size) }, b: { data: b } } })
    for (const [name, want] of [['a', Buffer.alloc(size)], ['b', b]] as const) {
      const out = Buffer.from(new SharedArrayBuffer(size))
      out.fill(0xee)
      await store.restore(c.cid, name, out)
      expect(out.equals(want)).toBe(true)
    }
  })

  it('a region of one repeated page (spread over several jobs) restores exactly into memory, a file and a stream', async () => {
    const dir = tmp()
    const store = await openStore(path.join(dir, 's'))
    stores.push(store)
    const size = 64 << 20
    const img = Buffer.alloc(size)
    const page = Buffer.alloc(PAGE)
    const r0 = rng(3)
    for (let i = 0; i < PAGE; i += 4) page.writeUInt32LE(r0(), i)
    for (let p = 0; p < size / PAGE; p++) if (p % 97 !== 0) page.copy(img, p * PAGE)
    img.fill(1, 10 * PAGE, 11 * PAGE)
    const tl = await store.timeline('t', { regions: { r: { size, chunkSize: PAGE } } })
    const c = await tl.checkpoint({ vtime: 0, regions: { r: { data: img } } })
    const shared = Buffer.from(new SharedArrayBuffer(size))
    const r = await store.restore(c.cid, 'r', shared)
    expect(shared.equals(img)).toBe(true)
    expect(r.chunksWritten).toBe(size / PAGE - Math.ceil(size / PAGE / 97))
    const file = path.join(dir, 'r.img')
    await store.restore(c.cid, 'r', file)
    expect(fs.readFileSync(file).equals(img)).toBe(true)
    const s = sink()
    await store.restore(c.cid, 'r', s)
    expect(Buffer.concat(s.chunks).equals(img)).toBe(true)
  })

  it('readJob with repeated chunks and an arbitrary subset writes each chunk where it belongs', async () => {
    const { dir, img, store } = await setup(512, 40)
    const ctx = store.context()
    const blocks = ctx.repo.blocks
    const geo = new Geometry(img.length, PAGE, 256)
    const live: number[] = []
    const byContent = new Map<string, number[]>()
    for (let p = 0; p < img.length / PAGE; p++) {
      const page = img.subarray(p * PAGE, p * PAGE + PAGE)
      if (!page.some((b) => b !== 0)) continue
      live.push(p)
      byContent.set(page.toString('latin1'), [...(byContent.get(page.toString('latin1')) ?? []), p])
    }
    // the same chunk index twice, two places of one content, and others, out of order
    const twin = [...byContent.values()].find((ps) => ps.length >= 2)!
    const picks = [live[10]!, twin[1]!, live[0]!, live[3]!, live[10]!, live.at(-1)!, twin[0]!, live[3]!]
    const job: Job = { seq: 0, chunks: [], cids: [], locs: [], raw: 0 }
    for (const p of picks) {
      const cid = cidBytes(RAW, blake3(img.subarray(p * PAGE, p * PAGE + PAGE)))
      job.chunks.push(p)
      job.cids.push(cid)
      job.locs.push(blocks.locate(cid)!)
      job.raw += PAGE
    }
    expect(new Set(job.cids.map((c) => cidToString(c))).size).toBeLessThan(job.cids.length)
    const shared = Buffer.from(new SharedArrayBuffer(img.length))
    await readJob(blocks, ctx.pool, geo, job, shared)
    const file = path.join(dir, 'sub.img')
    fs.writeFileSync(file, Buffer.alloc(img.length))
    await readJob(blocks, ctx.pool, geo, job, file)
    const onDisk = fs.readFileSync(file)
    const data = (await readJob(blocks, ctx.pool, geo, job, undefined))!
    for (let k = 0; k < job.chunks.length; k++) {
      const p = job.chunks[k]!
      const want = img.subarray(p * PAGE, p * PAGE + PAGE)
      expect(shared.subarray(p * PAGE, p * PAGE + PAGE).equals(want)).toBe(true)
      expect(onDisk.subarray(p * PAGE, p * PAGE + PAGE).equals(want)).toBe(true)
      expect(Buffer.from(data.subarray(k * PAGE, k * PAGE + PAGE)).equals(want)).toBe(true)
    }
  })

  it('a damaged chunk that repeats fails every kind of restore with CKPT_HASH_MISMATCH naming it', async () => {
    const { dir, img, store, ref } = await setup()
    // a page that occurs more than once (random bytes: stored as they are, so a flipped byte is a hash mismatch)
    const seen = new Map<string, number[]>()
    for (let p = 0; p < img.length / PAGE; p++) {
      const page = img.subarray(p * PAGE, p * PAGE + PAGE)
      if (!page.some((b) => b !== 0)) continue
      const k = page.toString('latin1')
      seen.set(k, [...(seen.get(k) ?? []), p])
    }
    const places = [...seen.values()].find((ps) => ps.length >= 3)!
    expect(places).toBeDefined()
    const page = img.subarray(places[0]! * PAGE, places[0]! * PAGE + PAGE)
    const cid = cidBytes(RAW, blake3(page))
    const loc = store.context().repo.blocks.locate(cid)!
    expect(loc.codec).toBe(0) // identity
    const pack = fs.readdirSync(path.join(dir, 's', 'packs')).find((f) => Number.parseInt(f, 10) === loc.pack)!
    const fd = fs.openSync(path.join(dir, 's', 'packs', pack), 'r+')
    const at = loc.offset + ENTRY_HEADER_SIZE + 100
    const b = Buffer.alloc(1)
    fs.readSync(fd, b, 0, 1, at)
    b[0] = b[0]! ^ 0xff
    fs.writeSync(fd, b, 0, 1, at)
    fs.closeSync(fd)

    const want = { code: 'CKPT_HASH_MISMATCH', details: expect.objectContaining({ cid: cidToString(cid) }) }
    await expect(store.restore(ref, 'ram', Buffer.from(new SharedArrayBuffer(img.length)))).rejects.toMatchObject(want)
    await expect(store.restore(ref, 'ram', Buffer.alloc(img.length))).rejects.toMatchObject(want)
    const file = path.join(dir, 'bad.img')
    await expect(store.restore(ref, 'ram', file)).rejects.toMatchObject(want)
    expect(fs.existsSync(file)).toBe(false)
    expect(fs.readdirSync(dir).filter((f) => f.includes('ckpt-partial'))).toEqual([])
    await expect(store.restore(ref, 'ram', sink())).rejects.toMatchObject(want)
    for (const p of places) await expect(store.readChunk(ref, 'ram', p)).rejects.toMatchObject({ code: 'CKPT_HASH_MISMATCH' })
  })
})
