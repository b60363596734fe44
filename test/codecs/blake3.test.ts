import { readFileSync } from 'node:fs'
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { loadBackend, type Blake3Backend } from '../../codecs/blake3.js'
import { hex } from '../helpers/bytes.js'
import { mulberry32 as u32s } from '../helpers/rng.js'

// Official vectors from BLAKE3-team/BLAKE3 test_vectors/test_vectors.json (first 32 bytes of `hash`).
const VECTORS: { input_len: number; hash: string }[] = JSON.parse(
  readFileSync(new URL('../fixtures/blake3-vectors.json', import.meta.url), 'utf8'),
)
const NAMES = ['napi', 'hash-wasm', 'noble'] as const

const vectorInput = (len: number): Uint8Array => Uint8Array.from({ length: len }, (_, i) => i % 251)

/** floats in [0, 1) from the shared seeded generator */
function mulberry32(seed: number): () => number {
  const next = u32s(seed)
  return () => next() / 4294967296
}

function randomBytes(rand: () => number, length: number): Uint8Array {
  const out = new Uint8Array(length)
  for (let i = 0; i < length; i++) out[i] = (rand() * 256) | 0
  return out
}

const backends = new Map<string, Blake3Backend | undefined>()
let noble: Blake3Backend

beforeAll(async () => {
  for (const name of NAMES) backends.set(name, await loadBackend(name))
  noble = backends.get('noble')!
})

describe.each(NAMES)('backend %s', (name) => {
  it('matches the official vectors', (ctx) => {
    const backend = backends.get(name)
    if (backend === undefined) return ctx.skip()
    expect(VECTORS.length).toBe(22)
    for (const v of VECTORS) {
      const digest = backend.hash(vectorInput(v.input_len))
      expect(digest).toBeInstanceOf(Uint8Array)
      expect(digest.length).toBe(32)
      expect(hex(digest), `input_len ${v.input_len}`).toBe(v.hash)
    }
  })

  it.skipIf(name === 'noble')('agrees with noble on 200 random inputs up to 200 KiB', (ctx) => {
    const backend = backends.get(name)
    if (backend === undefined) return ctx.skip()
    const rand = mulberry32(0xb1ae3)
    // Random offsets into a shared pool also exercise views with a non-zero byteOffset.
    const pool = randomBytes(rand, 256 * 1024)
    for (let n = 0; n < 200; n++) {
      const length = Math.floor(rand() * (200 * 1024 + 1))
      const offset = Math.floor(rand() * (pool.length - length + 1))
      const input = pool.subarray(offset, offset + length)
      expect(hex(backend.hash(input)), `case ${n}, length ${length}`).toBe(hex(noble.hash(input)))
    }
  })

  it('hashInto, where the backend has it, writes what hash() returns and nothing around it', (ctx) => {
    const backend = backends.get(name)
    if (backend?.hashInto === undefined) return ctx.skip()
    const rand = mulberry32(0x1470)
    const pool = randomBytes(rand, 80 * 1024)
    const out = new Uint8Array(32 * 40 + 2).fill(0xa5)
    for (let n = 0; n < 40; n++) {
      const length = n < 22 ? VECTORS[n]!.input_len % 65536 : Math.floor(rand() * 70000)
      const input = pool.subarray(n, n + length)
      backend.hashInto(input, out, 1 + n * 32)
      expect(hex(out.subarray(1 + n * 32, 33 + n * 32)), `case ${n}, length ${length}`).toBe(hex(noble.hash(input)))
    }
    expect([out[0], out[out.length - 1]]).toEqual([0xa5, 0xa5])
  })

  it('returns digests that later calls do not overwrite', (ctx) => {
    const backend = backends.get(name)
    if (backend === undefined) return ctx.skip()
    const first = backend.hash(vectorInput(1))
    backend.hash(vectorInput(1024))
    expect(hex(first)).toBe(VECTORS[1].hash)
  })
})

describe('hot path', () => {
  const saved = process.env.CKPT_BLAKE3
  afterEach(() => {
    if (saved === undefined) delete process.env.CKPT_BLAKE3
    else process.env.CKPT_BLAKE3 = saved
  })

  // Fresh module state per test, so "before initBlake3()" really is before it.
  async function freshModule(env: string | undefined): Promise<typeof import('../../codecs/blake3.js')> {
    if (env === undefined) delete process.env.CKPT_BLAKE3
    else process.env.CKPT_BLAKE3 = env
    vi.resetModules()
    return import('../../codecs/blake3.js')
  }

  it('blake3() agrees with noble before and after initBlake3()', async () => {
    const mod = await freshModule(undefined)
    const input = vectorInput(31744)
    const expected = hex(noble.hash(input))
    expect(hex(mod.blake3(input))).toBe(expected)
    const before = mod.blake3BackendName()
    expect(['napi', 'noble']).toContain(before)
    const backend = await mod.initBlake3()
    expect(mod.blake3BackendName()).toBe(backend.name)
    expect(hex(mod.blake3(input))).toBe(expected)
    // napi, when present, wins both before and after init.
    if (backends.get('napi') !== undefined) expect([before, backend.name]).toEqual(['napi', 'napi'])
  })

  it('blake3Into() writes the digest in place with every backend it may pick', async () => {
    for (const env of [undefined, 'noble']) {
      const mod = await freshModule(env)
      await mod.initBlake3()
      const input = vectorInput(4096)
      const out = new Uint8Array(70)
      mod.blake3Into(input, out, 3)
      expect(hex(out.subarray(3, 35)), String(env)).toBe(hex(noble.hash(input)))
      expect(hex(out.subarray(35)), String(env)).toBe('00'.repeat(35))
      expect(() => mod.blake3Into('abc' as unknown as Uint8Array, out, 0)).toThrow(TypeError)
    }
  })

  it('CKPT_BLAKE3=noble forces noble before and after init', async () => {
    const mod = await freshModule('noble')
    expect(mod.blake3BackendName()).toBe('noble')
    expect((await mod.initBlake3()).name).toBe('noble')
    expect(mod.blake3BackendName()).toBe('noble')
    expect(hex(mod.blake3(vectorInput(1025)))).toBe(VECTORS[4].hash)
  })

  it('CKPT_BLAKE3=hash-wasm forces hash-wasm after init', async (ctx) => {
    if (backends.get('hash-wasm') === undefined) return ctx.skip()
    const mod = await freshModule('hash-wasm')
    expect((await mod.initBlake3()).name).toBe('hash-wasm')
    expect(hex(mod.blake3(vectorInput(0)))).toBe(VECTORS[0].hash)
  })

  it('an unknown CKPT_BLAKE3 value is CKPT_CODEC_UNAVAILABLE', async () => {
    const mod = await freshModule('md5')
    await expect(mod.initBlake3()).rejects.toMatchObject({ code: 'CKPT_CODEC_UNAVAILABLE' })
    expect(() => mod.blake3(new Uint8Array(0))).toThrow(expect.objectContaining({ code: 'CKPT_CODEC_UNAVAILABLE' }))
  })

  it('rejects non-bytes with TypeError', async () => {
    const mod = await freshModule(undefined)
    expect(() => mod.blake3('abc' as unknown as Uint8Array)).toThrow(TypeError)
    await expect(mod.loadBackend('sha1' as never)).rejects.toThrow(TypeError)
  })
})
