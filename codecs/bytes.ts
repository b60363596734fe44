/**
 * A copy of bytes[start, end) as a plain Uint8Array. Buffer#slice returns a view (unlike
 * Uint8Array#slice): code that must own its bytes copies through this, whatever it was given.
 */
export function copyOf(bytes: Uint8Array, start = 0, end = bytes.length): Uint8Array {
  return Uint8Array.prototype.slice.call(bytes, start, end)
}
