/**
 * CarReader reads a source's chunk in place while nothing is pending (no copy) and keeps only the
 * unread rest before it pulls the next: a source that reuses one buffer for every chunk (fileSource)
 * gives the same sections as one that hands out fresh memory, at any chunk size.
 */
import { describe, expect, it } from 'vitest'
import { CarReader, encodeCarHeader, sectionPrefix } from '../../codecs/car.js'
import { cidBytes, RAW } from '../../codecs/cid.js'
import { mulberry32 } from '../helpers/rng.js'

function car(blocks: Uint8Array[]): { bytes: Buffer; cids: Uint8Array[] } {
  const cids = blocks.map((b, i) => cidBytes(RAW, Uint8Array.from({ length: 32 }, (_, j) => (i * 31 + j) & 255)))
  const parts: Uint8Array[] = [encodeCarHeader([cids[0]!])]
  blocks.forEach((b, i) => parts.push(sectionPrefix(cids[i]!, b.length), b))
  return { bytes: Buffer.concat(parts), cids }
}

/** Chunks of `size` bytes, all in one buffer that is scribbled over once the next is asked for. */
async function* reusing(bytes: Uint8Array, size: number): AsyncIterable<Uint8Array> {
  const buf = new Uint8Array(size)
  for (let at = 0; at < bytes.length; at += size) {
    const n = Math.min(size, bytes.length - at)
    buf.set(bytes.subarray(at, at + n))
    yield buf.subarray(0, n)
    buf.fill(0xa5)
  }
}

describe('CarReader over a source that reuses its buffer', () => {
  it('yields every section intact, whatever the chunk size', async () => {
    const rand = mulberry32(9)
    const blocks = Array.from({ length: 60 }, (_, i) => Uint8Array.from({ length: [0, 1, 7, 4096, 10000, 65536][i % 6]! + (i % 5) }, () => Math.floor(rand() * 256)))
    const { bytes, cids } = car(blocks)
    for (const size of [1, 3, 64, 4095, 4096, 70000, 1 << 20]) {
      const r = new CarReader(reusing(bytes, size))
      const h = await r.header()
      expect(Buffer.from(h.roots[0]!).equals(Buffer.from(cids[0]!))).toBe(true)
      let k = 0
      for await (const s of r.sections()) {
        expect(Buffer.from(s.cid).equals(Buffer.from(cids[k]!))).toBe(true)
        expect(Buffer.from(s.block).equals(Buffer.from(blocks[k]!))).toBe(true)
        k++
      }
      expect(k).toBe(blocks.length)
      expect(r.offset).toBe(bytes.length)
    }
  })
})
