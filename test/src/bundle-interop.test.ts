/**
 * Bundles and the IPFS world: a bundle ckpt writes is read by @ipld/car (roots and every block, each
 * re-hashed with @noble/hashes), imported by a Helia node (the Helia class of @helia/utils — what
 * createHelia builds — on an in-memory blockstore, without libp2p networking) through @helia/car and
 * walked from a checkpoint's manifest down to the raw chunks, giving back the region's bytes; and a
 * CAR that @ipld/car writes from the same blocks, in a DAG-walk order of its own, imports into ckpt.
 */
import { blake3 as nobleBlake3 } from '@noble/hashes/blake3.js'
import * as dagCbor from '@ipld/dag-cbor'
import { CarReader, CarWriter } from '@ipld/car'
import { CID } from 'multiformats/cid'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { exportBundle, importBundle, openStore, type CkptStore } from '../../src/index.js'
import { heliaImport, startHelia } from '../helpers/helia.js'
import { makeRng } from '../helpers/rng.js'
import { removeTmpDirs, tmpStorePath } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

const RAM = { size: 512 * 1024 + 4096 * 3, chunkSize: 4096 }

let store: CkptStore
let cids: string[] = []
let ram: Buffer
let car: Uint8Array

beforeAll(async () => {
  store = await openStore(tmpStorePath('ckpt-interop-'))
  const rng = makeRng(5)
  ram = Buffer.alloc(RAM.size)
  for (let i = 0; i < ram.length; i += 4096) if (rng.chance(0.7)) ram.set(rng.bytes(4096), i)
  const tl = await store.timeline('vm', { regions: { ram: RAM } })
  for (let k = 0; k < 5; k++) {
    const dirty = k === 0 ? undefined : [rng.int(0, 130), rng.int(0, 130)]
    for (const p of dirty ?? []) ram.set(rng.bytes(4096), p * 4096)
    const ck = await tl.checkpoint({ vtime: k * 1000, regions: { ram: { data: ram, dirty } }, blobs: { cpu: rng.bytes(100) } })
    cids.push(ck.cid.toString())
  }
  const parts: Uint8Array[] = []
  for await (const c of exportBundle(store, cids)) parts.push(c)
  car = Buffer.concat(parts)
})

afterAll(async () => {
  await store?.close()
})

async function carBlocks(bytes: Uint8Array): Promise<{ roots: CID[]; blocks: { cid: CID; bytes: Uint8Array }[] }> {
  const reader = await CarReader.fromBytes(bytes)
  const blocks: { cid: CID; bytes: Uint8Array }[] = []
  for await (const b of reader.blocks()) blocks.push(b)
  return { roots: await reader.getRoots(), blocks }
}

describe('bundles interoperate with IPFS tools', () => {
  it('@ipld/car reads the roots and every block; every block re-hashes to its CID with @noble/hashes', async () => {
    const { roots, blocks } = await carBlocks(car)
    expect(roots.map(String)).toEqual(cids)
    expect(blocks.length).toBe((await store.stats()).blocks)
    for (const b of blocks) {
      expect(b.cid.version).toBe(1)
      expect(b.cid.multihash.code).toBe(0x1e)
      expect(Buffer.from(nobleBlake3(b.bytes)).equals(Buffer.from(b.cid.multihash.digest))).toBe(true)
      expect([0x55, 0x71]).toContain(b.cid.code)
    }
  })

  it('a Helia node imports the bundle and walks a checkpoint from its manifest to the raw chunks', async () => {
    const { default: toBuffer } = await import('it-to-buffer')
    const helia = await startHelia()
    try {
      await heliaImport(helia, car)
      const get = async (cid: CID): Promise<Uint8Array> => toBuffer((helia.blockstore as unknown as { get(c: CID, o: object): AsyncIterable<Uint8Array> }).get(cid, { offline: true }))
      const root = CID.parse(cids[3]!)
      const manifest = dagCbor.decode<{ regions: { ram: { size: number; chunk: number; fanout: number; root: CID } } }>(await get(root))
      const { size, chunk, fanout } = manifest.regions.ram
      const out = Buffer.alloc(size)
      let height = 1
      for (let n = Math.ceil(Math.ceil(size / chunk) / fanout); n > 1; n = Math.ceil(n / fanout)) height++
      const walk = async (cid: CID | null, level: number, first: number): Promise<void> => {
        if (cid === null) return
        const bytes = await get(cid)
        expect(Buffer.from(nobleBlake3(bytes)).equals(Buffer.from(cid.multihash.digest))).toBe(true)
        if (level === 0) {
          expect(cid.code).toBe(0x55)
          out.set(bytes, first * chunk)
          return
        }
        const links = dagCbor.decode<(CID | null)[]>(bytes)
        const span = fanout ** (level - 1)
        for (let s = 0; s < links.length; s++) await walk(links[s] ?? null, level - 1, first + s * span)
      }
      await walk(manifest.regions.ram.root, height, 0)
      const expected = Buffer.alloc(size)
      await store.restore(cids[3]!, 'ram', expected)
      expect(out.equals(expected)).toBe(true)
    } finally {
      await helia.stop()
    }
  })

  it('a CAR that @ipld/car writes from the same blocks (manifests first, then a DAG walk) imports into ckpt', async () => {
    const { roots, blocks } = await carBlocks(car)
    const byCid = new Map(blocks.map((b) => [b.cid.toString(), b]))
    // pre-order from each root, the way a DAG exporter writes: parents before children
    const order: { cid: CID; bytes: Uint8Array }[] = []
    const seen = new Set<string>()
    const visit = (cid: CID) => {
      if (seen.has(cid.toString())) return
      seen.add(cid.toString())
      const b = byCid.get(cid.toString())
      if (!b) return // a version-1 manifest's parent outside the bundle (version 2 holds it as bytes, not a link)
      order.push(b)
      if (cid.code !== 0x71) return
      const value = dagCbor.decode<unknown>(b.bytes)
      const links: CID[] = []
      const collect = (v: unknown) => {
        const c = CID.asCID(v)
        if (c) links.push(c)
        else if (Array.isArray(v)) v.forEach(collect)
        else if (v && typeof v === 'object' && !(v instanceof Uint8Array)) Object.values(v).forEach(collect)
      }
      collect(value)
      links.forEach(visit)
    }
    roots.forEach(visit)
    expect(order.length).toBe(blocks.length)
    const { writer, out } = CarWriter.create(roots)
    const parts: Uint8Array[] = []
    const collected = (async () => {
      for await (const p of out) parts.push(p)
    })()
    for (const b of order) await writer.put(b)
    await writer.close()
    await collected
    const theirs = Buffer.concat(parts)
    expect(theirs.equals(Buffer.from(car))).toBe(false)
    const dst = await openStore(tmpStorePath('ckpt-interop-dst-'))
    try {
      const s = await importBundle(dst, (async function* () {
        yield theirs
      })())
      expect(s.checkpoints).toBe(5)
      for (const c of cids) {
        const a = Buffer.alloc(RAM.size)
        const b = Buffer.alloc(RAM.size)
        await store.restore(c, 'ram', a)
        await dst.restore(c, 'ram', b)
        expect(b.equals(a)).toBe(true)
      }
    } finally {
      await dst.close()
    }
  })
})
