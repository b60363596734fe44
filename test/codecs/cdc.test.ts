import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { CDC_DEFAULTS, cdcCuts, GEAR_SEED, type CdcOptions } from '../../codecs/cdc.js'
import { mulberry32 } from '../helpers/rng.js'

const KiB = 1024
const MiB = 1024 * KiB


function randomBytes(seed: number, length: number): Uint8Array {
  const next = mulberry32(seed)
  const out = new Uint8Array(length)
  for (let i = 0; i < length; i += 4) {
    const word = next()
    for (let j = 0; j < 4 && i + j < length; j++) out[i + j] = word >>> (8 * j)
  }
  return out
}

function chunks(data: Uint8Array, cuts: number[]): Uint8Array[] {
  return cuts.map((end, i) => data.subarray(i === 0 ? 0 : cuts[i - 1], end))
}

const key = (chunk: Uint8Array): string => createHash('sha256').update(chunk).digest('hex')

const SMALL: Required<CdcOptions> = { minSize: 64, avgSize: 256, maxSize: 1024 }
const MEDIUM: Required<CdcOptions> = { minSize: 1 * KiB, avgSize: 4 * KiB, maxSize: 16 * KiB }

describe('cdcCuts properties', () => {
  const cases: [string, Required<CdcOptions>, number[]][] = [
    ['small', SMALL, [0, 1, 63, 64, 65, 1023, 1024, 1025, 50_000, 300_000]],
    ['medium', MEDIUM, [0, 5 * KiB, 17 * KiB, 1 * MiB + 7]],
    ['defaults', CDC_DEFAULTS, [0, 16 * KiB, 16 * KiB + 1, 256 * KiB + 1, 3 * MiB + 123]],
  ]
  it.each(cases)('%s: increasing, bounded, deterministic, lossless', (_, opts, lengths) => {
    const rand = mulberry32(42)
    for (const length of [...lengths, ...Array.from({ length: 8 }, () => rand() % (40 * opts.maxSize))]) {
      const data = randomBytes(length + 7, length)
      const cuts = cdcCuts(data, opts)
      if (length === 0) {
        expect(cuts).toEqual([])
        continue
      }
      expect(cuts.at(-1)).toBe(length)
      const parts = chunks(data, cuts)
      parts.forEach((part, i) => {
        expect(part.length).toBeGreaterThan(0)
        expect(part.length).toBeLessThanOrEqual(opts.maxSize)
        if (i < parts.length - 1) expect(part.length).toBeGreaterThanOrEqual(opts.minSize)
      })
      expect(Buffer.concat(parts).equals(data)).toBe(true)
      expect(cdcCuts(data.slice(), opts)).toEqual(cuts)
      // Cut points depend only on content, not on where the view sits in its buffer.
      const padded = new Uint8Array(length + 3)
      padded.set(data, 3)
      expect(cdcCuts(padded.subarray(3), opts)).toEqual(cuts)
    }
  })

  it('cuts low-entropy data at maxSize', () => {
    const cuts = cdcCuts(new Uint8Array(1 * MiB + 5))
    expect(cuts.length).toBe(5)
    expect(chunks(new Uint8Array(1 * MiB + 5), cuts).map((c) => c.length)).toEqual([...Array(4).fill(256 * KiB), 5])
  })

  it('resists shifts: an insertion of 100 bytes keeps >= 90% of chunks', () => {
    const original = randomBytes(7, 4 * MiB)
    const middle = 2 * MiB
    const modified = Buffer.concat([original.subarray(0, middle), randomBytes(8, 100), original.subarray(middle)])
    const known = new Set(chunks(original, cdcCuts(original)).map(key))
    const parts = chunks(modified, cdcCuts(modified))
    const shared = parts.filter((part) => known.has(key(part))).length
    expect(shared / parts.length).toBeGreaterThanOrEqual(0.9)
  })

  it('averages within 30% of avgSize on 16 MiB of random data', () => {
    const data = randomBytes(99, 16 * MiB)
    const mean = data.length / cdcCuts(data).length
    expect(mean).toBeGreaterThanOrEqual(CDC_DEFAULTS.avgSize * 0.7)
    expect(mean).toBeLessThanOrEqual(CDC_DEFAULTS.avgSize * 1.3)
  })
})

// Cut points are on-disk format: these pins catch any change to the gear table, masks or cut rule.
describe('cdcCuts format pins', () => {
  it('uses the documented seed', () => {
    expect(GEAR_SEED).toBe(0x636b70745f636463n)
    expect(CDC_DEFAULTS).toEqual({ minSize: 16 * KiB, avgSize: 64 * KiB, maxSize: 256 * KiB })
  })

  it('reproduces recorded cut points', () => {
    expect(cdcCuts(randomBytes(1, 8 * KiB), SMALL)).toEqual(PINNED_SMALL)
    expect(cdcCuts(randomBytes(2, 1 * MiB))).toEqual(PINNED_DEFAULTS)
  })
})

describe('cdcCuts arguments', () => {
  const data = new Uint8Array(1000)
  it.each<[string, CdcOptions]>([
    ['min below 64', { minSize: 32, avgSize: 128, maxSize: 512 }],
    ['max above 16 MiB', { minSize: 1 * MiB, avgSize: 4 * MiB, maxSize: 16 * MiB + 1 }],
    ['min == avg', { minSize: 4096, avgSize: 4096, maxSize: 16384 }],
    ['avg == max', { minSize: 1024, avgSize: 4096, maxSize: 4096 }],
    ['avg not a power of two', { minSize: 1024, avgSize: 3000, maxSize: 16384 }],
    ['non-integer size', { minSize: 1024.5, avgSize: 4096, maxSize: 16384 }],
    ['negative size', { minSize: -1 }],
    ['NaN size', { maxSize: Number.NaN }],
  ])('%s is CKPT_BAD_ARGUMENT', (_, opts) => {
    expect(() => cdcCuts(data, opts)).toThrow(expect.objectContaining({ code: 'CKPT_BAD_ARGUMENT' }))
  })

  it('accepts partial options and explicit undefined', () => {
    expect(cdcCuts(data, { minSize: undefined })).toEqual([1000])
    expect(() => cdcCuts(data, { minSize: 64 })).not.toThrow()
  })

  it('throws TypeError on wrong argument types', () => {
    expect(() => cdcCuts('abc' as unknown as Uint8Array)).toThrow(TypeError)
    expect(() => cdcCuts(data, 5 as unknown as CdcOptions)).toThrow(TypeError)
    expect(() => cdcCuts(data, { avgSize: '4096' } as unknown as CdcOptions)).toThrow(TypeError)
  })
})

// Recorded from this implementation and confirmed by an independent re-implementation of the rule
// documented in codecs/cdc.ts.
const PINNED_SMALL = [
  380, 683, 817, 1132, 1401, 1734, 2053, 2382, 2753, 2904, 3240, 3555, 3832, 4345, 4624, 5015, 5310, 5589, 5893, 6008,
  6264, 6604, 6899, 7096, 7243, 7325, 7622, 7887, 8166, 8192,
]
const PINNED_DEFAULTS = [
  85340, 157281, 223975, 294916, 382443, 455315, 482553, 556500, 638144, 723750, 791860, 859442, 938283, 1004138, 1048576,
]
