/**
 * The public API as a new user meets it: CIDs are CID objects wherever the API returns one; `dirty`
 * takes any iterable of chunk indexes or a bitmap (rounded up to 8 bytes as a KVM dirty log is);
 * a vtime number past 2^53 asks for a bigint; restore() tells the region's size from the bytes it
 * wrote; the published declarations hold no internals.
 */
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { CID } from 'multiformats/cid'
import { afterAll, describe, expect, it } from 'vitest'
import { memoryBackend, openStore, type CkptStore } from '../../src/index.js'
import { collect } from '../helpers/bytes.js'
import { bytesEqual, caught, removeTmpDirs, tmpDir } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

const PAGE = 4096
const PAGES = 100

async function withStore(fn: (store: CkptStore) => Promise<void>): Promise<void> {
  const store = await openStore('api-shape', { backend: memoryBackend(), threads: 1 })
  try {
    await fn(store)
  } finally {
    await store.close()
  }
}

function page(ram: Uint8Array, p: number, v: number): void {
  ram.fill(v, p * PAGE, (p + 1) * PAGE)
}

describe('CIDs are CID objects', () => {
  it('manifest(): parent, region roots and blob chunks; Timeline.head()', async () => {
    await withStore(async (store) => {
      const tl = await store.timeline('vm', { regions: { ram: { size: PAGES * PAGE }, zero: { size: 8 * PAGE } } })
      expect(tl.head()).toBeNull()
      const ram = new Uint8Array(PAGES * PAGE)
      page(ram, 3, 1)
      const a = await tl.checkpoint({ vtime: 1, regions: { ram: { data: ram } }, blobs: { cpu: new Uint8Array([1, 2, 3]) } })
      expect(tl.head()).toBeInstanceOf(CID)
      expect(tl.head()!.equals(a.cid)).toBe(true)
      page(ram, 4, 2)
      const b = await tl.checkpoint({ vtime: 2, regions: { ram: { data: ram, dirty: [4] } } })
      expect(tl.head()!.toString()).toBe(b.cid.toString())
      const m = await store.manifest(b.cid)
      expect(m.parent).toBeInstanceOf(CID)
      expect(m.parent!.equals(a.cid)).toBe(true)
      expect(m.regions.ram!.root).toBeInstanceOf(CID)
      expect(m.regions.zero!.root).toBeNull()
      expect(m.blobs.cpu!.chunks[0]!.cid).toBeInstanceOf(CID)
      expect((await store.manifest(a.cid)).parent).toBeNull()
      // the same CIDs as log() and resolve() give
      const log = await collect(store.log('vm'))
      expect(log.map((e) => e.cid.toString())).toEqual([a.cid.toString(), b.cid.toString()])
      expect((await store.resolve('vm')).equals(b.cid)).toBe(true)
    })
  })
})

describe('dirty', () => {
  async function roundTrip(dirty: unknown, changed: number[]): Promise<void> {
    await withStore(async (store) => {
      const tl = await store.timeline('vm', { regions: { ram: { size: PAGES * PAGE } } })
      const ram = new Uint8Array(PAGES * PAGE)
      await tl.checkpoint({ vtime: 1, regions: { ram: { data: ram } } })
      for (const p of changed) page(ram, p, p + 1)
      const c = await tl.checkpoint({ vtime: 2, regions: { ram: { data: ram, dirty: dirty as never } } })
      expect(c.stats.chunks).toBe(new Set(changed).size)
      const out = new Uint8Array(PAGES * PAGE)
      await store.restore(c.cid, 'ram', out)
      expect(bytesEqual(out, ram)).toBe(true)
    })
  }

  it('takes a Set, a generator, a typed array and an array', async () => {
    await roundTrip(new Set([5, 7, 99]), [5, 7, 99])
    await roundTrip(
      (function* () {
        yield 1
        yield 2
      })(),
      [1, 2],
    )
    await roundTrip(Uint32Array.of(0, 64), [0, 64])
    await roundTrip([9, 9, 8], [9, 8])
  })

  it('a bitmap: chunk i is bit (i & 7) of byte (i >> 3); its length may be rounded up to 8 bytes, bits past the region ignored', async () => {
    const bits = (n: number, pages: number[]) => {
      const b = new Uint8Array(n)
      for (const p of pages) b[p >> 3]! |= 1 << (p & 7)
      return b
    }
    // 100 chunks: 13 bytes exactly, or 16 as a 64-bit dirty log gives them
    await roundTrip({ bitmap: bits(13, [0, 9, 99]) }, [0, 9, 99])
    await roundTrip({ bitmap: bits(16, [1, 63, 64]) }, [1, 63, 64])
    const past = bits(16, [2])
    past[15] = 0xff
    past[12]! |= 0xf0
    await roundTrip({ bitmap: past }, [2])
    await withStore(async (store) => {
      const tl = await store.timeline('vm', { regions: { ram: { size: PAGES * PAGE } } })
      const ram = new Uint8Array(PAGES * PAGE)
      await tl.checkpoint({ vtime: 1, regions: { ram: { data: ram } } })
      for (const n of [12, 17, 24]) {
        const err = await caught(() => tl.checkpoint({ vtime: 2, regions: { ram: { data: ram, dirty: { bitmap: new Uint8Array(n) } } } }))
        expect(err.code).toBe('CKPT_WRONG_SIZE')
      }
      expect(await caught(() => tl.checkpoint({ vtime: 2, regions: { ram: { data: ram, dirty: 5 as never } } }))).toBeInstanceOf(TypeError)
      expect((await caught(() => tl.checkpoint({ vtime: 2, regions: { ram: { data: ram, dirty: new Set([100]) } } }))).code).toBe('CKPT_OUT_OF_RANGE')
    })
  })
})

describe('vtime', () => {
  it('a number past Number.MAX_SAFE_INTEGER asks for a bigint; the bigint works', async () => {
    await withStore(async (store) => {
      const tl = await store.timeline('vm', { regions: { r: { size: PAGE } } })
      const err = await caught(() => tl.checkpoint({ vtime: 2 ** 53, regions: { r: { data: new Uint8Array(PAGE) } } }))
      expect(err.code).toBe('CKPT_BAD_ARGUMENT')
      expect(err.message).toMatch(/use a bigint/)
      expect((await caught(() => store.seek('vm', 2 ** 60))).message).toMatch(/use a bigint/)
      const c = await tl.checkpoint({ vtime: 2n ** 53n + 1n, regions: { r: { data: new Uint8Array(PAGE) } } })
      expect(c.vtime).toBe(2n ** 53n + 1n)
    })
  })
})

describe('restore() reports what it did', () => {
  it('the region size, the bytes and chunks of stored chunks written, and the holes', async () => {
    await withStore(async (store) => {
      const size = 10 * PAGE + 100
      const tl = await store.timeline('vm', { regions: { r: { size } } })
      const data = new Uint8Array(size)
      data.fill(7, 0, PAGE)
      data.fill(9, 10 * PAGE, size)
      const c = await tl.checkpoint({ vtime: 1, regions: { r: { data } } })
      const out = new Uint8Array(size).fill(0xee)
      const r = await store.restore(c.cid, 'r', out)
      expect(r).toEqual({ size, bytesWritten: PAGE + 100, chunksWritten: 2, holes: 9 })
      expect(bytesEqual(out, data)).toBe(true)
      const file = path.join(tmpDir('ckpt-shape-'), 'r.bin')
      expect(await store.restore(c.cid, 'r', file)).toEqual(r)
      expect(bytesEqual(fs.readFileSync(file), data)).toBe(true)
      // a sink, written front to back with the holes as zeros
      const parts: Uint8Array[] = []
      expect(await store.restore(c.cid, 'r', { write: async (b) => void parts.push(Uint8Array.from(b)) })).toEqual(r)
      expect(bytesEqual(Buffer.concat(parts), data)).toBe(true)
    })
  })
})

describe('the published declarations', () => {
  const dts = (f: string) => fs.readFileSync(fileURLToPath(new URL(`../../dist/src/${f}`, import.meta.url)), 'utf8')

  it('hold no internals of Timeline and CkptStore', () => {
    const timeline = dts('timeline.d.ts')
    for (const name of ['record', 'headMoved', 'checkpointsRemoved', 'recordChanged', 'headBytes']) expect(timeline).not.toMatch(new RegExp(`^\\s+${name}[(:]`, 'm'))
    expect(timeline).toMatch(/^\s+head\(\): CID \| null;/m)
    const store = dts('store.d.ts')
    for (const name of ['context', 'internals', 'exclusive', 'resolveCid', 'timelinesChanged']) expect(store).not.toMatch(new RegExp(`^\\s+${name}[(<]`, 'm'))
    expect(store).toMatch(/^\s+manifest\(ref: string \| CID\): Promise<CheckpointManifest>;/m)
  })
})
