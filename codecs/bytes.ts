import fs from 'node:fs'
/**
 * A copy of bytes[start, end) as a plain Uint8Array. Buffer#slice returns a view (unlike
 * Uint8Array#slice): code that must own its bytes copies through this, whatever it was given.
 */
export function copyOf(bytes: Uint8Array, start = 0, end = bytes.length): Uint8Array {
  return Uint8Array.prototype.slice.call(bytes, start, end)
}

/** Reads up to into.length bytes of a file at pos (fewer only at its end); returns how many. */
export function preadUpTo(fd: number, into: Uint8Array, pos: number): number {
  let got = 0
  while (got < into.length) {
    const n = fs.readSync(fd, into, got, into.length - got, pos + got)
    if (n === 0) break
    got += n
  }
  return got
}
