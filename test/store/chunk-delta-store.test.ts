/**
 * Chunk deltas at rest (codec 4) through the block store: a chain reads back as the whole chunks
 * (staged, committed, reopened), every version proven, a damaged base failing with its own CID.
 */
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { blake3, initBlake3 } from '../../codecs/blake3.js'
import { cidBytes, cidToString, RAW, type CidBytes } from '../../codecs/cid.js'
import { AT_REST, defaultCompressor, compressBlock } from '../../codecs/compress.js'
import { chunkDeltaBound, encodeChunkDeltaInto } from '../../codecs/chunk-delta.js'
import { ENTRY_HEADER_SIZE } from '../../codecs/pack-format.js'
import { packFileName } from '../../store/pack-io.js'
import { Repository } from '../../store/repository.js'
import { memoryBackend } from '../../store/backend.js'
import { makeRng, type Rng } from '../helpers/rng.js'
import { flipByte } from '../helpers/damage.js'
import { readableAcrossReopen } from '../helpers/reopen.js'
import { bytesEqual, caught, removeTmpDirs, tmpStorePath } from '../helpers/tmp.js'

afterAll(removeTmpDirs)
await initBlake3()

function textPage(rng: Rng): Uint8Array {
  const p = new Uint8Array(4096)
  for (let i = 0; i < p.length; i++) p[i] = rng.chance(0.1) ? rng.int(0, 256) : 0x61 + rng.int(0, 8)
  return p
}

function rewrite(rng: Rng, p: Uint8Array): Uint8Array {
  const out = p.slice()
  for (let r = 0; r < 4; r++) out.set(rng.bytes(24), rng.int(0, 4096 - 24))
  return out
}

/** A page stored whole and `len` later versions each stored as a delta against the one before. */
function putChunkChain(repo: Repository, rng: Rng, len: number): { pages: Uint8Array[]; cids: CidBytes[] } {
  const pages = [textPage(rng)]
  for (let k = 1; k <= len; k++) pages.push(rewrite(rng, pages[k - 1]!))
  const cids = pages.map((p) => cidBytes(RAW, blake3(p)))
  const whole = compressBlock(defaultCompressor(), pages[0]!)
  expect(repo.blocks.put(cids[0]!, whole.code, whole.bytes, 4096)).toBe(true)
  const dst = new Uint8Array(chunkDeltaBound(4096))
  for (let k = 1; k <= len; k++) {
    const n = encodeChunkDeltaInto(defaultCompressor(), cids[k - 1]!, pages[k - 1]!, pages[k]!, dst, 0)
    expect(n).toBeGreaterThan(0)
    expect(n).toBeLessThan(whole.bytes.length / 2)
    expect(repo.blocks.put(cids[k]!, AT_REST.chunkDelta, dst.slice(0, n), 4096, { depth: k })).toBe(true)
  }
  return { pages, cids }
}

describe('BlockStore: chunk deltas at rest', () => {
  it('a chain of chunk deltas reads back as the whole chunks, before and after commit and reopen', async () => {
    await readableAcrossReopen(
      (repo) => putChunkChain(repo, makeRng(1), 6),
      (r, { pages, cids }) => {
        for (let k = 0; k < pages.length; k++) {
          expect(bytesEqual(r.blocks.get(cids[k]!), pages[k]!), `page ${k}`).toBe(true)
          expect(bytesEqual(r.blocks.getAt(cids[k]!, r.blocks.locate(cids[k]!)), pages[k]!), `page ${k} at its location`).toBe(true)
          const loc = r.blocks.locate(cids[k]!)!
          expect(loc.codec).toBe(k === 0 ? defaultCompressor().code : AT_REST.chunkDelta)
          expect(loc.depth).toBe(k)
        }
      },
      (r, { pages, cids }) => expect(bytesEqual(r.blocks.get(cids[6]!), pages[6]!)).toBe(true),
    )
  })

  it('a damaged base: every chunk built on it fails with CKPT_HASH_MISMATCH naming the base, never wrong bytes', async () => {
    const dir = tmpStorePath('ckpt-cd-')
    let repo = await Repository.open(dir)
    const { cids, pages } = putChunkChain(repo, makeRng(2), 3)
    await repo.commit([])
    const loc = repo.blocks.locate(cids[1]!)!
    await repo.close()
    // flip a byte in the middle of the first delta's frame
    flipByte(path.join(dir, 'packs', packFileName(loc.pack)), loc.offset + ENTRY_HEADER_SIZE + 37 + Math.floor((loc.storedLength - 37) / 2), 0x10)
    repo = await Repository.open(dir, { mustExist: true })
    try {
      expect(bytesEqual(repo.blocks.get(cids[0]!), pages[0]!)).toBe(true)
      for (const k of [3, 1, 2]) {
        const err = await caught(() => repo.blocks.get(cids[k]!))
        expect(['CKPT_HASH_MISMATCH', 'CKPT_BAD_PACK'], `chunk ${k}: ${err.message}`).toContain(err.code)
        expect(err.details?.cid, `chunk ${k}`).toBe(cidToString(cids[1]!))
      }
    } finally {
      await repo.close()
    }
  })

  it('a delta whose base is not stored -> CKPT_NOT_FOUND naming the base', async () => {
    const repo = await Repository.open('memory:cd', { backend: memoryBackend() })
    try {
      const rng = makeRng(3)
      const base = textPage(rng)
      const next = rewrite(rng, base)
      const baseCid = cidBytes(RAW, blake3(base))
      const cid = cidBytes(RAW, blake3(next))
      const dst = new Uint8Array(chunkDeltaBound(4096))
      const n = encodeChunkDeltaInto(defaultCompressor(), baseCid, base, next, dst, 0)
      repo.blocks.put(cid, AT_REST.chunkDelta, dst.slice(0, n), 4096, { depth: 1 })
      await repo.commit([])
      const err = await caught(() => repo.blocks.get(cid))
      expect(err.code).toBe('CKPT_NOT_FOUND')
      expect(err.details?.cid).toBe(cidToString(baseCid))
    } finally {
      await repo.close()
    }
  })
})
