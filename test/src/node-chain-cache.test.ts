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
