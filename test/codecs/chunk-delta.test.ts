import { describe, expect, it } from 'vitest'
import { blake3 } from '../../codecs/blake3.js'
import { cidBytes, DAG_CBOR, RAW } from '../../codecs/cid.js'
import { AT_REST, deflateCompressor, nodeZstdCompressor, zstdCompressor, type Compressor } from '../../codecs/compress.js'
import { CHUNK_DELTA_HEADER, chunkDeltaBase, chunkDeltaBound, encodeChunkDeltaInto, openChunkDelta, usableBase } from '../../codecs/chunk-delta.js'
import { CkptError } from '../../codecs/errors.js'
import { mulberry32 } from '../helpers/rng.js'

/** A page of text-like bytes, and a version of it with a few runs rewritten (what a guest does to a page). */
function versions(seed: number, size: number): { base: Uint8Array; next: Uint8Array } {
  const rnd = mulberry32(seed)
  const base = new Uint8Array(size)
  for (let i = 0; i < size; i++) base[i] = rnd() % 7 === 0 ? rnd() & 0xff : 0x20 + (rnd() % 16)
  const next = base.slice()
  for (let r = 0; r < 8; r++) {
    const at = rnd() % (size - 16)
    for (let i = 0; i < 16; i++) next[at + i] = rnd() & 0xff
  }
  return { base, next }
}

function encode(c: Compressor, base: Uint8Array, data: Uint8Array): Uint8Array {
  const dst = new Uint8Array(chunkDeltaBound(data.length) + 8)
  const n = encodeChunkDeltaInto(c, cidBytes(RAW, blake3(base)), base, data, dst, 8)
  expect(n).toBeGreaterThan(CHUNK_DELTA_HEADER)
  return dst.slice(8, 8 + n)
}

const compressors: [string, Compressor | undefined][] = [
  ['zstd', zstdCompressor()],
  ['zstd via node:zlib', nodeZstdCompressor()],
  ['deflate', deflateCompressor()],
]

describe('chunk deltas (at-rest codec 4)', () => {
  for (const [name, c] of compressors) {
    it.skipIf(c === undefined)(`${name}: a changed page round-trips against its base and stores in far less than alone`, () => {
      for (const size of [4096, 65536]) {
        const { base, next } = versions(size, size)
        const payload = encode(c!, base, next)
        expect(chunkDeltaBase(payload)).toEqual(cidBytes(RAW, blake3(base)))
        expect(payload[36]).toBe(c!.code)
        // deflate's window is 32 KiB: only a page gains much from its base there
        if (c!.code === AT_REST.zstd || size <= 32768) expect(payload.length).toBeLessThan(c!.compress(next).length / 2)
        expect(Buffer.from(openChunkDelta(payload, base, next.length))).toEqual(Buffer.from(next))
        const into = new Uint8Array(next.length)
        expect(openChunkDelta(payload, base, next.length, into)).toBe(into)
        expect(Buffer.from(into)).toEqual(Buffer.from(next))
      }
    })
  }

  it.skipIf(zstdCompressor() === undefined || nodeZstdCompressor() === undefined)('zstd-napi and node:zlib read each other’s deltas', () => {
    const { base, next } = versions(7, 4096)
    expect(Buffer.from(openChunkDelta(encode(zstdCompressor()!, base, next), base, 4096))).toEqual(Buffer.from(next))
    expect(Buffer.from(openChunkDelta(encode(nodeZstdCompressor()!, base, next), base, 4096))).toEqual(Buffer.from(next))
  })

  it('refuses a base zstd would read as a formatted dictionary, or too short to help', () => {
    const z = zstdCompressor()
    const magic = new Uint8Array(4096)
    magic.set([0x37, 0xa4, 0x30, 0xec])
    if (z) {
      expect(usableBase(z, magic)).toBe(false)
      expect(encodeChunkDeltaInto(z, cidBytes(RAW, blake3(magic)), magic, new Uint8Array(4096), new Uint8Array(chunkDeltaBound(4096)), 0)).toBe(-1)
    }
    expect(usableBase(deflateCompressor(), magic)).toBe(true)
    expect(usableBase(deflateCompressor(), new Uint8Array(16))).toBe(false)
  })

  it('a wrong base, a damaged frame, a foreign header or trailing bytes are CKPT_BAD_PACK, never wrong bytes', () => {
    const { base, next } = versions(3, 4096)
    const c = zstdCompressor() ?? deflateCompressor()
    const payload = encode(c, base, next)
    const fails = (p: Uint8Array, b = base, len = 4096) => {
      try {
        const out = openChunkDelta(p, b, len)
        // a dictionary-compressed frame against another base may decode; its bytes then differ
        return !(out.length === next.length && out.every((v, i) => v === next[i]))
      } catch (err) {
        expect(err).toBeInstanceOf(CkptError)
        expect((err as CkptError).code).toBe('CKPT_BAD_PACK')
        return true
      }
    }
    const other = versions(4, 4096).base
    expect(fails(payload, other)).toBe(true)
    const flipped = payload.slice()
    flipped[flipped.length - 3]! ^= 0x40
    expect(fails(flipped)).toBe(true)
    expect(fails(payload.subarray(0, payload.length - 5))).toBe(true)
    const nodeBase = payload.slice()
    nodeBase[1] = DAG_CBOR
    expect(() => chunkDeltaBase(nodeBase)).toThrow(/not a raw BLAKE3 CID/)
    const unknown = payload.slice()
    unknown[36] = 9
    expect(() => openChunkDelta(unknown, base, 4096)).toThrow(/unknown inner codec 9/)
    expect(fails(Buffer.concat([payload, new Uint8Array([1, 2, 3])]))).toBe(true)
    expect(fails(payload, base, 4095)).toBe(true)
    expect(() => chunkDeltaBase(payload.subarray(0, 37))).toThrow(/too short/)
    expect(AT_REST.chunkDelta).toBe(4)
  })
})
