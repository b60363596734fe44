import { readdirSync, readFileSync, statSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import {
  AT_REST,
  compressBlock,
  compressorFor,
  decompressBlock,
  decompressWith,
  defaultCompressor,
  deflateCompressor,
  identity,
  nodeZstdCompressor,
  zstdCompressor,
  type Compressor,
} from '../../codecs/compress.js'
import { CkptError } from '../../codecs/errors.js'
import { mulberry32 } from '../helpers/rng.js'


function randomBytes(seed: number, length: number): Uint8Array {
  const next = mulberry32(seed)
  const out = new Uint8Array(length)
  for (let i = 0; i < length; i++) out[i] = next() & 0xff
  return out
}

function textLike(seed: number, length: number): Uint8Array {
  const words = ['page', 'table', 'entry', 'kernel', 'the', 'of', 'register', 'cpu', 'mmio', 'zero', '\n']
  const next = mulberry32(seed)
  const s: string[] = []
  let n = 0
  while (n < length) {
    const w = words[next() % words.length]! + ' '
    s.push(w)
    n += w.length
  }
  return new TextEncoder().encode(s.join('')).subarray(0, length)
}

let binaries: Uint8Array | undefined

/** Up to `length` bytes of real shared libraries from /usr/lib (empty when there are none). */
function binaryLike(length: number): Uint8Array {
  binaries ??= readBinaries(1 << 20)
  return binaries.subarray(0, length)
}

function readBinaries(length: number): Uint8Array {
  const parts: Buffer[] = []
  let n = 0
  const walk = (dir: string, depth: number): void => {
    let names: string[]
    try {
      names = readdirSync(dir).sort()
    } catch {
      return
    }
    for (const name of names) {
      if (n >= length) return
      const path = join(dir, name)
      try {
        const st = statSync(path)
        if (st.isDirectory() && depth < 2) walk(path, depth + 1)
        else if (st.isFile() && /\.so(\.|$)/.test(name) && st.size > 4096) {
          const b = readFileSync(path)
          parts.push(b)
          n += b.length
        }
      } catch {
        // unreadable entries are just skipped
      }
    }
  }
  walk('/usr/lib', 0)
  return new Uint8Array(Buffer.concat(parts).subarray(0, length))
}

const LENGTHS = [0, 1, 2, 100, 4095, 4096, 4097, 65536, 200_000, 1 << 20]

const compressors: Compressor[] = [identity, deflateCompressor()]
const zstd = zstdCompressor()
if (zstd) compressors.push(zstd)
// node:zlib's zstd too where Node has it and it is not the one loaded: every implementation keeps the contract
const otherZstd = nodeZstdCompressor()
if (otherZstd && otherZstd !== zstd) compressors.push(otherZstd)
const label = (c: Compressor) => (c.impl ? `${c.name} (${c.impl})` : c.name)

function expectCode(f: () => unknown, code: string): void {
  let caught: unknown
  try {
    f()
  } catch (err) {
    caught = err
  }
  expect(caught).toBeInstanceOf(CkptError)
  expect((caught as CkptError).code).toBe(code)
}

describe('compressors', () => {
  it('have the pack-format codes', () => {
    expect(AT_REST).toEqual({ identity: 0, zstd: 1, deflate: 2, nodeDelta: 3, chunkDelta: 4 })
    expect(identity.code).toBe(0)
    expect(deflateCompressor().code).toBe(2)
    if (zstd) expect(zstd.code).toBe(1)
  })

  it('zstd loads whenever zstd-napi is installed, as one shared instance', () => {
    let installed = true
    try {
      createRequire(import.meta.url).resolve('zstd-napi')
    } catch {
      installed = false
    }
    expect(zstd !== undefined).toBe(installed)
    expect(zstdCompressor()).toBe(zstd)
  })

  const inputs: [string, (n: number) => Uint8Array][] = [
    ['zeros', (n) => new Uint8Array(n)],
    ['text', (n) => textLike(n + 1, n)],
    ['random', (n) => randomBytes(n + 7, n)],
    ['binary', (n) => binaryLike(n)],
  ]

  for (const c of compressors) {
    for (const [kind, make] of inputs) {
      it(`${label(c)} round-trips ${kind} data`, () => {
        for (const n of LENGTHS) {
          const data = make(n)
          if (data.length !== n) continue // fewer library bytes than asked for
          const packed = c.compress(data)
          const back = decompressWith(c, packed, n)
          expect(back.length).toBe(n)
          expect(Buffer.from(back).equals(Buffer.from(data))).toBe(true)
          const stored = compressBlock(c, data)
          expect(Buffer.from(decompressBlock(stored.code, stored.bytes, n)).equals(Buffer.from(data))).toBe(true)
        }
      })
    }
  }

  it('decompresses large zstd and deflate blocks (16 MiB)', () => {
    const data = textLike(99, 16 << 20)
    for (const c of compressors) {
      const back = decompressWith(c, c.compress(data), data.length)
      expect(Buffer.from(back).equals(Buffer.from(data))).toBe(true)
    }
  })
})

describe('compressBlock', () => {
  it('stores random data as identity, returning the input itself', () => {
    const data = randomBytes(1, 4096)
    for (const c of compressors) {
      const r = compressBlock(c, data)
      expect(r.code).toBe(AT_REST.identity)
      expect(r.bytes).toBe(data)
    }
  })

  it('compresses compressible data with the given codec', () => {
    const data = textLike(2, 4096)
    for (const c of compressors.filter((x) => x !== identity)) {
      const r = compressBlock(c, data)
      expect(r.code).toBe(c.code)
      expect(r.bytes.length).toBeLessThanOrEqual(data.length * 0.97)
    }
  })

  it('keeps identity unless at least 3% is saved', () => {
    const fake = (saving: number): Compressor => ({
      code: 9,
      name: 'fake',
      compress: (d) => d.subarray(0, Math.floor(d.length * (1 - saving))),
      decompress: (d) => d,
    })
    const data = randomBytes(3, 1000)
    expect(compressBlock(fake(0.02), data).code).toBe(AT_REST.identity)
    expect(compressBlock(fake(0.03), data).code).toBe(9)
    expect(compressBlock(fake(0.5), new Uint8Array(0)).code).toBe(AT_REST.identity)
  })
})

describe('decompressBlock on damaged input', () => {
  for (const c of compressors.filter((x) => x !== identity)) {
    it(`${label(c)}: truncation, extension and wrong lengths are CKPT_BAD_PACK`, () => {
      const data = textLike(4, 65536)
      const packed = c.compress(data)
      for (const cut of [0, 1, 5, packed.length >> 1, packed.length - 1]) {
        expectCode(() => decompressWith(c, packed.subarray(0, cut), data.length), 'CKPT_BAD_PACK')
      }
      const longer = new Uint8Array(packed.length + 3)
      longer.set(packed)
      longer.set([1, 2, 3], packed.length)
      expectCode(() => decompressWith(c, longer, data.length), 'CKPT_BAD_PACK')
      expectCode(() => decompressWith(c, packed, data.length - 1), 'CKPT_BAD_PACK')
      expectCode(() => decompressWith(c, packed, data.length + 1), 'CKPT_BAD_PACK')
      expectCode(() => decompressWith(c, randomBytes(5, 300), data.length), 'CKPT_BAD_PACK')
    })

    it(`${label(c)}: flipped bytes never yield the wrong length or a foreign exception`, () => {
      const next = mulberry32(6)
      for (const data of [textLike(7, 4096), textLike(8, 100_000), randomBytes(9, 4096).fill(0, 0, 3000)]) {
        const packed = c.compress(data)
        for (let i = 0; i < 300; i++) {
          const bad = Uint8Array.from(packed)
          bad[next() % bad.length]! ^= 1 << next() % 8
          try {
            expect(decompressWith(c, bad, data.length).length).toBe(data.length)
          } catch (err) {
            expect(err).toBeInstanceOf(CkptError)
            expect((err as CkptError).code).toBe('CKPT_BAD_PACK')
          }
        }
      }
    })
  }

  it('identity checks the length', () => {
    expect(decompressBlock(AT_REST.identity, new Uint8Array(5), 5).length).toBe(5)
    expectCode(() => decompressBlock(AT_REST.identity, new Uint8Array(5), 6), 'CKPT_BAD_PACK')
  })
})

describe('zstd from node:zlib (Node >= 22.15)', () => {
  const nodeZstd = nodeZstdCompressor()
  it.skipIf(nodeZstd === undefined)('writes what zstd-napi writes, and each reads the other', () => {
    const napi = createRequire(import.meta.url)('zstd-napi/binding') as { CCtx: new () => { compress(d: Uint8Array, s: Uint8Array, l: number): number }; compressBound(n: number): number }
    const cctx = new napi.CCtx()
    for (const [seed, n] of [[1, 4096], [2, 100], [3, 70_000], [4, 1 << 20]] as const) {
      const data = textLike(seed, n)
      const dst = Buffer.alloc(napi.compressBound(n))
      const want = dst.subarray(0, cctx.compress(dst, data, 1))
      const got = nodeZstd!.compress(data)
      expect(Buffer.from(got).equals(want)).toBe(true)
      expect(Buffer.from(decompressBlock(AT_REST.zstd, want, n)).equals(Buffer.from(data))).toBe(true)
      expect(Buffer.from(nodeZstd!.decompress(want, n)).equals(Buffer.from(data))).toBe(true)
    }
    // a frame claiming more than the recorded raw length fails, it never allocates what it claims
    expect(() => nodeZstd!.decompress(nodeZstd!.compress(textLike(5, 10_000)), 100)).toThrow()
  })
})

describe('codec selection', () => {
  const saved = process.env['CKPT_COMPRESS']
  afterEach(() => {
    if (saved === undefined) delete process.env['CKPT_COMPRESS']
    else process.env['CKPT_COMPRESS'] = saved
  })

  it('writes with zstd when it loads, else deflate', () => {
    delete process.env['CKPT_COMPRESS']
    expect(defaultCompressor().code).toBe(zstd ? AT_REST.zstd : AT_REST.deflate)
  })

  it('CKPT_COMPRESS forces a codec', () => {
    process.env['CKPT_COMPRESS'] = 'deflate'
    expect(defaultCompressor().code).toBe(AT_REST.deflate)
    process.env['CKPT_COMPRESS'] = 'identity'
    expect(defaultCompressor()).toBe(identity)
    process.env['CKPT_COMPRESS'] = 'zstd'
    if (zstd) expect(defaultCompressor()).toBe(zstd)
    else expectCode(() => defaultCompressor(), 'CKPT_CODEC_UNAVAILABLE')
    process.env['CKPT_COMPRESS'] = 'lz4'
    expectCode(() => defaultCompressor(), 'CKPT_CODEC_UNAVAILABLE')
  })

  it('compressorFor reads the known codes and rejects the others', () => {
    expect(compressorFor(AT_REST.identity)).toBe(identity)
    expect(compressorFor(AT_REST.deflate).code).toBe(AT_REST.deflate)
    if (zstd) expect(compressorFor(AT_REST.zstd)).toBe(zstd)
    for (const code of [AT_REST.nodeDelta, 4, 255, -1, 1.5]) {
      expectCode(() => compressorFor(code), 'CKPT_CODEC_UNAVAILABLE')
      expectCode(() => decompressBlock(code, new Uint8Array(1), 1), 'CKPT_CODEC_UNAVAILABLE')
    }
  })

  it('misuse is a TypeError', () => {
    expect(() => decompressBlock(0, 'x' as unknown as Uint8Array, 1)).toThrow(TypeError)
    expect(() => decompressBlock(0, new Uint8Array(1), -1)).toThrow(TypeError)
    expect(() => compressBlock(identity, [1] as unknown as Uint8Array)).toThrow(TypeError)
  })
})

describe('CKPT_ZSTD picks the zstd implementation (a new process each: the choice is made once)', () => {
  // the built module (npm test builds first)
  const built = pathToFileURL(join(fileURLToPath(import.meta.url), '../../../dist/codecs/compress.js')).href
  const implWith = (value: string | undefined): string => {
    const env = { ...process.env }
    delete env['CKPT_ZSTD']
    if (value !== undefined) env['CKPT_ZSTD'] = value
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', `import(${JSON.stringify(built)}).then((m) => { try { console.log(m.zstdImplementation() ?? 'none') } catch (e) { console.log(e.code) } })`], { env, encoding: 'utf8' })
    return r.stdout.trim()
  }
  let napi = true
  try {
    createRequire(import.meta.url).resolve('zstd-napi')
  } catch {
    napi = false
  }
  const hasNodeZstd = nodeZstdCompressor() !== undefined

  it('takes zstd-napi where it loads, else node:zlib', () => {
    expect(implWith(undefined)).toBe(napi ? 'zstd-napi' : hasNodeZstd ? 'node:zlib' : 'none')
  })

  it('CKPT_ZSTD=node takes node:zlib where Node has it (else zstd-napi); another value is CKPT_CODEC_UNAVAILABLE', () => {
    expect(implWith('node')).toBe(hasNodeZstd ? 'node:zlib' : napi ? 'zstd-napi' : 'none')
    expect(implWith('napi')).toBe(napi ? 'zstd-napi' : hasNodeZstd ? 'node:zlib' : 'none')
    expect(implWith('lz4')).toBe('CKPT_CODEC_UNAVAILABLE')
  })
})
