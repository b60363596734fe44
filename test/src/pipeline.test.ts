import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { openStore, verifyStore, type CkptStore } from '../../src/index.js'
import { pattern } from '../helpers/bytes.js'

const dirs: string[] = []
const stores: CkptStore[] = []
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-pipe-'))
  dirs.push(d)
  return d
}
afterEach(async () => {
  for (const s of stores.splice(0)) await s.close()
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true })
})

describe('copy-then-resume', () => {
  it('copies dirty chunks before checkpoint() returns: later writes do not leak into it', async () => {
    const store = await openStore(tmp())
    stores.push(store)
    const ram = pattern(1 << 20, 1)
    const tl = await store.timeline('t', { regions: { ram: { size: ram.length } } })
    await tl.checkpoint({ vtime: 0, regions: { ram: { data: ram } } })
    ram.fill(7, 4096 * 10, 4096 * 12)
    const expected = Buffer.from(ram)
    const pending = tl.checkpoint({ vtime: 1, regions: { ram: { data: ram, dirty: [10, 11] } } })
    ram.fill(9) // the emulator resumes at once and scribbles everywhere
    const ck = await pending
    const out = Buffer.alloc(ram.length)
    await store.restore(ck.cid, 'ram', out)
    expect(out.equals(expected)).toBe(true)
  })

  it('copies blobs given as Buffers too (Buffer#slice is a view): later writes do not leak into them', async () => {
    const store = await openStore(tmp())
    stores.push(store)
    const ram = pattern(1 << 20, 5)
    const tl = await store.timeline('t', { regions: { ram: { size: ram.length } } })
    const cpu = Buffer.from('registers at step one, exactly these bytes')
    const expected = Buffer.from(cpu)
    const pending = tl.checkpoint({ vtime: 0, regions: { ram: { data: ram } }, blobs: { cpu } })
    cpu.fill(0x55)
    const ck = await pending
    expect(Buffer.from(await store.readBlob(ck.cid, 'cpu')).equals(expected)).toBe(true)
  })

  it('applies backpressure: beyond maxPendingBytes the copy waits, `copied` says when, nothing is lost', async () => {
    const store = await openStore(tmp(), { maxPendingBytes: 64 * 1024 })
    stores.push(store)
    const ram = pattern(2 << 20, 2)
    const tl = await store.timeline('t', { regions: { ram: { size: ram.length } } })
    await tl.checkpoint({ vtime: 0, regions: { ram: { data: ram } } })
    const copiedEarly: boolean[] = []
    const pendings = []
    const expected: Buffer[] = []
    for (let k = 1; k <= 6; k++) {
      const pages = Array.from({ length: 32 }, (_, i) => (k * 37 + i * 5) % 512) // 128 KiB per checkpoint
      for (const p of pages) ram.fill(k, p * 4096, p * 4096 + 4096)
      const ck = tl.checkpoint({ vtime: k, regions: { ram: { data: ram, dirty: pages } } })
      let done = false
      void ck.copied.then(() => (done = true))
      await Promise.resolve()
      copiedEarly.push(done)
      await ck.copied // the emulator must not touch its buffer before this
      expected.push(Buffer.from(ram))
      pendings.push(ck)
    }
    // the first fits (pipeline empty); at least one later one had to wait for room
    expect(copiedEarly[0]).toBe(true)
    expect(copiedEarly.slice(1).some((x) => !x)).toBe(true)
    const results = await Promise.all(pendings)
    for (let k = 0; k < results.length; k++) {
      const out = Buffer.alloc(ram.length)
      await store.restore(results[k]!.cid, 'ram', out)
      expect(out.equals(expected[k]!)).toBe(true)
    }
  })
})

describe('worker pool and inline fallback', () => {
  it('gives identical CIDs with worker threads and inline (threads: 0), for buffers and files', async () => {
    const ram = pattern(3 << 20, 3)
    const file = path.join(tmp(), 'disk.img')
    fs.writeFileSync(file, pattern(5 * 65536 + 1000, 4)) // a short last cluster
    const cids: string[][] = []
    for (const threads of [0, 2]) {
      const store = await openStore(tmp(), { threads })
      stores.push(store)
      const tl = await store.timeline('t', { regions: { ram: { size: ram.length }, disk: { size: fs.statSync(file).size, chunkSize: 65536 } } })
      const a = await tl.checkpoint({ vtime: 0, regions: { ram: { data: ram }, disk: { data: file } } })
      const r2 = Buffer.from(ram)
      r2.fill(1, 0, 4096)
      const b = await tl.checkpoint({ vtime: 1, regions: { ram: { data: r2, dirty: [0] } } })
      // manifests differ (wall time); the region roots must not
      const roots = async (ref: typeof a.cid) => {
        const m = await store.manifest(ref)
        return [m.regions.ram!.root, m.regions.disk!.root].map((r) => (r ? r.toString() : 'zero'))
      }
      cids.push([...(await roots(a.cid)), ...(await roots(b.cid))])
      const out = Buffer.alloc(fs.statSync(file).size)
      await store.restore(b.cid, 'disk', out)
      expect(out.equals(fs.readFileSync(file))).toBe(true)
      const outFile = path.join(tmp(), 'restored.img')
      await store.restore(b.cid, 'ram', outFile)
      expect(fs.readFileSync(outFile).equals(r2)).toBe(true)
    }
    expect(cids[0]).toEqual(cids[1])
  })

  it('a full scan of a file equals a full scan of the same bytes in a buffer (canonical roots)', async () => {
    const bytes = pattern(2 << 20, 5)
    const file = path.join(tmp(), 'ram.bin')
    fs.writeFileSync(file, bytes)
    const store = await openStore(tmp())
    stores.push(store)
    const a = await (await store.timeline('a', { regions: { ram: { size: bytes.length } } })).checkpoint({ vtime: 0, regions: { ram: { data: file } } })
    const b = await (await store.timeline('b', { regions: { ram: { size: bytes.length } } })).checkpoint({ vtime: 5, regions: { ram: { data: bytes, stable: true } } })
    expect((await store.manifest(a.cid)).regions.ram!.root!.toString()).toBe((await store.manifest(b.cid)).regions.ram!.root!.toString())
    expect(b.stats.newChunks).toBe(0) // everything deduplicated against timeline a
  })
})

describe('dirty-hint checkpoints on the worker pool', () => {
  it('give the roots a full scan of the same contents gives (leaves hashed with their chunks, known chunks skipped)', async () => {
    const a = await openStore(tmp())
    const b = await openStore(tmp())
    stores.push(a, b)
    const regions = { ram: { size: 8 << 20, chunkSize: 4096 }, disk: { size: 4 << 20, chunkSize: 65536 } }
    const ram = pattern(regions.ram.size, 3)
    const disk = pattern(regions.disk.size, 4)
    const ta = await a.timeline('t', { regions })
    await ta.checkpoint({ vtime: 0, regions: { ram: { data: ram }, disk: { data: disk } } })
    let x = 12345
    const rnd = (n: number) => {
      x = (x * 1103515245 + 12345) >>> 0
      return x % n
    }
    for (let k = 1; k <= 6; k++) {
      const pages = new Set<number>()
      for (let i = 0; i < 700; i++) {
        const p = rnd(2048)
        pages.add(p)
        const kind = rnd(4)
        if (kind === 0) ram.fill(0, p * 4096, p * 4096 + 4096) // a hole
        else if (kind === 1) ram.copy(ram, p * 4096, rnd(2048) * 4096, 0) // no change at all
        else if (kind === 2) ram.copy(ram, p * 4096, ((p + 1 + rnd(2046)) % 2048) * 4096, ((p + 1 + rnd(2046)) % 2048) * 4096 + 4096) // stored content
        else ram.writeUInt32LE(k * 1000 + i, p * 4096 + rnd(1024) * 4) // new content
      }
      const clusters = [rnd(64), rnd(64), 63]
      for (const c of clusters) disk.writeUInt32LE(k, c * 65536 + 8)
      const ck = await ta.checkpoint({ vtime: k, regions: { ram: { data: ram, dirty: [...pages] }, disk: { data: disk, dirty: clusters } } })
      const tb = await b.timeline(`scan${k}`, { regions })
      const full = await tb.checkpoint({ vtime: 0, regions: { ram: { data: ram }, disk: { data: disk } } })
      const ma = await a.manifest(ck.cid)
      const mb = await b.manifest(full.cid)
      const hex = (c: { toString(): string } | null | undefined) => (c ? c.toString() : String(c))
      expect(hex(ma.regions.ram!.root)).toBe(hex(mb.regions.ram!.root))
      expect(hex(ma.regions.disk!.root)).toBe(hex(mb.regions.disk!.root))
      expect(ma.regions.ram!.root).not.toBeNull()
      const out = Buffer.alloc(ram.length)
      await a.restore(ck.cid, 'ram', out)
      expect(out.equals(ram)).toBe(true)
    }
  })
})

describe('tree leaves made on the worker pool', () => {
  it('are written as the tree writes them inline: the same deltas, chains and whole nodes, checkpoint by checkpoint', async () => {
    const saved = process.env.CKPT_INLINE_BYTES
    process.env.CKPT_INLINE_BYTES = '0' // the workers from the first task on
    let a: CkptStore
    try {
      a = await openStore(tmp(), { threads: 2 })
    } finally {
      if (saved === undefined) delete process.env.CKPT_INLINE_BYTES
      else process.env.CKPT_INLINE_BYTES = saved
    }
    const b = await openStore(tmp(), { threads: 0 })
    stores.push(a, b)
    const regions = { ram: { size: 8 << 20, chunkSize: 4096 }, disk: { size: 4 << 20, chunkSize: 65536 } }
    const ram = pattern(regions.ram.size, 5)
    const disk = pattern(regions.disk.size, 6)
    const ta = await a.timeline('t', { regions })
    const tb = await b.timeline('t', { regions })
    for (const t of [ta, tb]) await t.checkpoint({ vtime: 0, regions: { ram: { data: ram }, disk: { data: disk } } })
    let x = 777
    const rnd = (n: number) => {
      x = (x * 1103515245 + 12345) >>> 0
      return x % n
    }
    // past the delta chains' depth limits (25-32), so leaves are also stored whole or against their chain's start
    for (let k = 1; k <= 40; k++) {
      const pages = new Set<number>()
      for (let i = 0; i < 150; i++) {
        // most changes in a few hot leaves, some anywhere
        const p = rnd(4) === 0 ? rnd(2048) : 256 * rnd(3) + rnd(256)
        pages.add(p)
        const kind = rnd(4)
        if (kind === 0) ram.fill(0, p * 4096, p * 4096 + 4096)
        else if (kind === 1) continue // listed dirty, unchanged
        else ram.writeUInt32LE(k * 1000 + i, p * 4096 + rnd(1024) * 4)
      }
      const clusters = [rnd(64), 63]
      for (const c of clusters) disk.writeUInt32LE(k, c * 65536 + 8)
      const input = { vtime: k, regions: { ram: { data: ram, dirty: [...pages] }, disk: { data: disk, dirty: clusters } } }
      const ca = await ta.checkpoint(input)
      const cb = await tb.checkpoint(input)
      expect([ca.stats.nodesWritten, ca.stats.nodeBytes], `checkpoint ${k}`).toEqual([cb.stats.nodesWritten, cb.stats.nodeBytes])
      const [ma, mb] = [await a.manifest(ca.cid), await b.manifest(cb.cid)]
      expect(String(ma.regions.ram!.root)).toBe(String(mb.regions.ram!.root))
      expect(String(ma.regions.disk!.root)).toBe(String(mb.regions.disk!.root))
    }
    const last = (await a.seek('t', 40))!
    const out = Buffer.alloc(ram.length)
    await a.restore(last.cid, 'ram', out)
    expect(out.equals(ram)).toBe(true)
    const it = verifyStore(a, { deep: true })
    const findings: string[] = []
    for (let r = await it.next(); !r.done; r = await it.next()) findings.push(r.value.kind)
    expect(findings).toEqual([])
  })
})
