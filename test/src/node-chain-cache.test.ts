/**
 * Tree nodes rebuilt as intermediate versions of a delta chain are cached (a cursor stepping back
 * through a timeline rebuilds each version once) but are not trusted: one is hashed before it is
 * returned itself, and the node asked for is always hashed, so a damaged version on disk is found
 * whichever way it is reached.
 */
import fs from 'node:fs'
import { afterAll, expect, it } from 'vitest'
import { openStore } from '../../src/index.js'
import { caught, removeTmpDirs, tmpStorePath } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

const CHUNK = 512
const CHUNKS = 64 // one leaf: the root is the region's only node, stored as a delta of its previous version

it('a damaged intermediate version, cached from the chain of a later one, is still CKPT_HASH_MISMATCH when read itself', async () => {
  const dir = tmpStorePath('ckpt-chain-')
  let store = await openStore(dir, { threads: 1 })
  const tl = await store.timeline('t', { regions: { r: { size: CHUNK * CHUNKS, chunkSize: CHUNK } } })
  const data = new Uint8Array(CHUNK * CHUNKS).fill(1)
  const cps: string[] = []
  for (let k = 0; k < 10; k++) {
    // chunk 7 changes at every checkpoint; chunk 20 + k once each
    data.fill(100 + k, 7 * CHUNK, 8 * CHUNK)
    data.fill(50 + k, (20 + k) * CHUNK, (21 + k) * CHUNK)
    cps.push((await tl.checkpoint({ vtime: k, regions: { r: { data } } })).cid.toString())
  }
  // the version of checkpoint 3: its delta sets chunk 7's new CID, which checkpoint 4 overwrites
  const m3 = await store.manifest(cps[3]!)
  const root3 = m3.regions.r!.root!.bytes
  const blocks = store.context().repo.blocks
  const loc = blocks.find(root3)!
  expect(loc.codec).toBe(3) // a node delta
  await store.close()

  // damage chunk 7's digest inside that delta (the digest of bytes 103 repeated)
  const { blake3 } = await import('../../codecs/blake3.js')
  const digest = blake3(new Uint8Array(CHUNK).fill(103))
  const pack = blocks.filePath(loc.pack)!
  const bytes = fs.readFileSync(pack)
  const from = loc.offset
  const to = loc.offset + 52 + loc.storedLength
  const at = Buffer.from(bytes.subarray(from, to)).indexOf(Buffer.from(digest))
  expect(at).toBeGreaterThan(0)
  bytes[from + at + 5]! ^= 0x40
  fs.writeFileSync(pack, bytes)

  store = await openStore(dir, { threads: 1 })
  // the last checkpoint reads fine: its chain passes the damaged version, whose damaged slot a later version overwrites
  const last = await store.readChunk(cps[9]!, 'r', 7)
  expect(last[0]).toBe(109)
  expect((await store.readChunk(cps[9]!, 'r', 23))[0]).toBe(53)
  // the damaged version itself, now cached as an intermediate, is hashed before it is used
  expect((await caught(() => store.readChunk(cps[3]!, 'r', 7))).code).toBe('CKPT_HASH_MISMATCH')
  // and a version after it, not damaged, still reads
  expect((await store.readChunk(cps[5]!, 'r', 25))[0]).toBe(55)
  await store.close()
})

it('a chain read without its intermediates (gc\'s mark) gives the same nodes, caches none of the versions between and leaves cached bases as they were', async () => {
  const dir = tmpStorePath('ckpt-chain-once-')
  const store = await openStore(dir, { threads: 1 })
  try {
    const tl = await store.timeline('t', { regions: { r: { size: CHUNK * CHUNKS, chunkSize: CHUNK } } })
    const data = new Uint8Array(CHUNK * CHUNKS).fill(1)
    const roots: Uint8Array[] = []
    for (let k = 0; k < 12; k++) {
      data.fill(100 + k, 7 * CHUNK, 8 * CHUNK)
      data.fill(50 + k, ((20 + k) % CHUNKS) * CHUNK, ((21 + k) % CHUNKS) * CHUNK)
      const c = await tl.checkpoint({ vtime: k, regions: { r: { data } } })
      roots.push((await store.manifest(c.cid.toString())).regions.r!.root!.bytes)
    }
    const blocks = store.context().repo.blocks
    expect(blocks.find(roots[11]! as never)!.codec).toBe(3)
    // the expected nodes, each read by the usual path (which caches intermediates), then forgotten
    const { encodeNode } = await import('../../codecs/tree-node.js')
    const want = roots.map((r) => Buffer.from(encodeNode(blocks.getNode(r as never))).toString('hex'))
    const { cidKey } = await import('../../codecs/cid.js')
    const forget = () => {
      for (const r of roots) blocks.nodeCache.drop(cidKey(r as never))
    }
    forget()
    // a cached base in the middle of the chain: rebuilt from, never written into
    const base = blocks.getNode(roots[4]! as never)
    const baseHex = Buffer.from(encodeNode(base)).toString('hex')
    const tip = blocks.getNode(roots[11]! as never, false)
    expect(Buffer.from(encodeNode(tip)).toString('hex')).toBe(want[11])
    expect(Buffer.from(encodeNode(base)).toString('hex')).toBe(baseHex)
    expect(Buffer.from(encodeNode(blocks.getNode(roots[4]! as never))).toString('hex')).toBe(want[4])
    // the versions between (5..10) were not cached (the usual path caches them: checked below)
    for (let k = 5; k <= 10; k++) expect(blocks.nodeCache.base(cidKey(roots[k]! as never))).toBeUndefined()
    for (let k = 5; k <= 10; k++) expect(Buffer.from(encodeNode(blocks.getNode(roots[k]! as never, false))).toString('hex')).toBe(want[k])
    // the whole chain from its start, nothing cached, newest first
    forget()
    for (let k = 11; k >= 0; k--) expect(Buffer.from(encodeNode(blocks.getNode(roots[k]! as never, false))).toString('hex')).toBe(want[k])
    // the usual path keeps the versions between
    forget()
    blocks.getNode(roots[11]! as never)
    expect(blocks.nodeCache.base(cidKey(roots[8]! as never))).toBeDefined()
    // and a restore of each checkpoint still gives its bytes
    expect((await store.readChunk(tl.head()!.toString(), 'r', 7))[0]).toBe(111)
  } finally {
    await store.close()
  }
})
