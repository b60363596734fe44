/** blake3Equals, the read path's digest check: the same verdict as comparing blake3()'s digest, on every backend. */
import { afterAll, describe, expect, it } from 'vitest'
import { blake3Equals, initBlake3, blake3 } from '../../codecs/blake3.js'

const saved = process.env.CKPT_BLAKE3
afterAll(async () => {
  if (saved === undefined) delete process.env.CKPT_BLAKE3
  else process.env.CKPT_BLAKE3 = saved
  await initBlake3()
})

describe('blake3Equals', () => {
  for (const backend of ['napi', 'hash-wasm', 'noble']) {
    it(`agrees with blake3() on ${backend}, at any offset, and refuses any other digest`, async () => {
      process.env.CKPT_BLAKE3 = backend
      await initBlake3()
      for (const n of [0, 1, 64, 1025, 4096, 65536]) {
        const data = Uint8Array.from({ length: n }, (_, i) => (i * 31 + n) & 255)
        const d = blake3(data)
        const padded = new Uint8Array(40 + 32)
        padded.set(d, 40)
        expect(blake3Equals(data, d)).toBe(true)
        expect(blake3Equals(data, padded, 40)).toBe(true)
        // shared memory, as the workers hash it
        const shared = new Uint8Array(new SharedArrayBuffer(n + 8)).subarray(8)
        shared.set(data)
        expect(blake3Equals(shared, d)).toBe(true)
        for (const at of [0, 17, 31]) {
          const bad = Uint8Array.from(d)
          bad[at]! ^= 1
          expect(blake3Equals(data, bad)).toBe(false)
        }
      }
    })
  }
})
