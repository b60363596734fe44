/**
 * The fingerprint table's layout (store/fingerprint-set.ts keeps it): open addressing over 64-bit
 * digest prefixes, two u32 words a slot (low word first, an empty slot all zero, a zero prefix stored
 * as 1), linear probing. Worker threads read a shared view of it to skip chunks that may be stored.
 */
export interface FingerprintView {
  table: Uint32Array
  mask: number
}

/** mayHave() over a (possibly shared, possibly stale) view of a table; digest starts at `at`. */
export function viewMayHave(v: FingerprintView, digest: Uint8Array, at = 0): boolean {
  let lo = (digest[at]! | (digest[at + 1]! << 8) | (digest[at + 2]! << 16) | (digest[at + 3]! << 24)) >>> 0
  let hi = (digest[at + 4]! | (digest[at + 5]! << 8) | (digest[at + 6]! << 16) | (digest[at + 7]! << 24)) >>> 0
  if (lo === 0 && hi === 0) lo = 1
  const t = v.table
  const mask = v.mask
  for (let i = lo & mask, n = 0; n <= mask; i = (i + 1) & mask, n++) {
    const a = t[2 * i]!
    const b = t[2 * i + 1]!
    if (a === 0 && b === 0) return false
    if (a === lo && b === hi) return true
  }
  return false
}
