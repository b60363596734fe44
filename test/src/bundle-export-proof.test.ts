/**
 * Bundle export proves what it sends: the worker that decompresses a chunk into the CAR re-hashes it,
 * and the worker that encodes a tree node into the CAR hashes those bytes against the node's CID. A
 * node whose stored form rebuilds to other entries (a damaged delta chain that still decodes) fails
 * the export with CKPT_HASH_MISMATCH naming the node; it never reaches the bundle.
 */
import { afterAll, describe, expect, it } from 'vitest'
import { CarReader } from '../../codecs/car.js'
import { cidToString } from '../../codecs/cid.js'
import { exportBundle, importBundle, openStore, type CkptStore } from '../../src/index.js'
import { makeRng } from '../helpers/rng.js'
import { caught, removeTmpDirs, tmpStorePath } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

const REGIONS = { ram: { size: 1024 * 1024, chunkSize: 4096 } }

async function build(): Promise<{ store: CkptStore; cids: string[] }> {
  const store = await openStore(tmpStorePath('ckpt-export-proof-'))
  const rng = makeRng(14)
  const ram = Buffer.alloc(REGIONS.ram.size)
  for (let p = 0; p < 256; p += 3) ram.set(rng.bytes(4096), p * 4096)
  const tl = await store.timeline('vm', { regions: REGIONS })
  const cids: string[] = []
  for (let k = 0; k < 4; k++) {
    const dirty = [rng.int(0, 256), rng.int(0, 256)]
    for (const p of dirty) ram.set(rng.bytes(4096), p * 4096)
    cids.push((await tl.checkpoint({ vtime: k, regions: { ram: { data: ram, dirty: k === 0 ? undefined : dirty } } })).cid.toString())
  }
  return { store, cids }
}

async function bytesOf(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of stream) parts.push(Buffer.from(c))
  return Buffer.concat(parts)
}

describe('bundle export proves every block it writes', () => {
  for (const mode of ['inline', 'workers'] as const) {
    it(`a tree node that rebuilds to other entries: CKPT_HASH_MISMATCH naming it (${mode})`, async () => {
      const was = process.env.CKPT_INLINE_BYTES
      if (mode === 'workers') process.env.CKPT_INLINE_BYTES = '0'
      try {
        const { store, cids } = await build()
        const good = await bytesOf(exportBundle(store, cids))
        // the same export, byte for byte, a second time (nodes now come from the cache)
        expect((await bytesOf(exportBundle(store, cids))).equals(good)).toBe(true)
        const blocks = store.context().repo.blocks
        const real = blocks.resolveNode.bind(blocks)
        // the last checkpoint's root node rebuilds as the one before's: every link it has is a
        // valid block, only its bytes no longer hash to its CID
        const ctx = store.context()
        const last = (await ctx.manifestOf(await ctx.resolve(cids.at(-1)!))).regions.ram!.root!
        const prev = (await ctx.manifestOf(await ctx.resolve(cids.at(-2)!))).regions.ram!.root!
        const victim = cidToString(last)
        blocks.resolveNode = (cid, hops, keep) => (hops === 0 && cidToString(cid) === victim ? real(prev, 0, keep) : real(cid, hops, keep))
        const err = await caught(() => bytesOf(exportBundle(store, cids)))
        expect(err.code).toBe('CKPT_HASH_MISMATCH')
        expect(err.message).toContain(victim)
        blocks.resolveNode = real
        await store.close()
        // the good bundle reads as a CAR and imports whole
        const reader = new CarReader((async function* () { yield good })())
        await reader.header()
        let n = 0
        for await (const _ of reader.sections()) n++
        expect(n).toBeGreaterThan(0)
        const dst = await openStore(tmpStorePath('ckpt-export-proof-dst-'))
        const s = await importBundle(dst, (async function* () { yield good })())
        expect(s.checkpoints).toBe(cids.length)
        await dst.close()
      } finally {
        if (was === undefined) delete process.env.CKPT_INLINE_BYTES
        else process.env.CKPT_INLINE_BYTES = was
      }
    })
  }
})
