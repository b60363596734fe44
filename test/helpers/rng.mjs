// Seeded PRNG shared by the TypeScript tests and the plain-JS crash child.

/** mulberry32: a tiny, fast 32-bit PRNG; same seed, same sequence, on every platform. */
export function mulberry32(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (t ^ (t >>> 14)) >>> 0
  }
}

/** A convenience wrapper: integers, floats, picks, bytes. */
export function makeRng(seed) {
  const next = mulberry32(seed)
  const rng = {
    /** uint32 */
    u32: next,
    /** float in [0, 1) */
    float: () => next() / 4294967296,
    /** integer in [lo, hi) */
    int: (lo, hi) => lo + Math.floor((next() / 4294967296) * (hi - lo)),
    /** true with probability p */
    chance: (p) => next() / 4294967296 < p,
    pick: (arr) => arr[Math.floor((next() / 4294967296) * arr.length)],
    /** n pseudo-random bytes */
    bytes: (n) => {
      const out = new Uint8Array(n)
      let i = 0
      for (; i + 4 <= n; i += 4) {
        const v = next()
        out[i] = v
        out[i + 1] = v >>> 8
        out[i + 2] = v >>> 16
        out[i + 3] = v >>> 24
      }
      for (; i < n; i++) out[i] = next()
      return out
    },
    shuffle: (arr) => {
      for (let i = arr.length - 1; i > 0; i--) {
        const j = Math.floor((next() / 4294967296) * (i + 1))
        const t = arr[i]
        arr[i] = arr[j]
        arr[j] = t
      }
      return arr
    },
  }
  return rng
}
