import fs from 'node:fs'

/** Flips the bits of `mask` in the byte at `at` of `file` (a pack, an index table), as disk damage would. */
export function flipByte(file: string, at: number, mask = 0x01): void {
  const fd = fs.openSync(file, 'r+')
  try {
    const b = Buffer.alloc(1)
    fs.readSync(fd, b, 0, 1, at)
    b[0]! ^= mask
    fs.writeSync(fd, b, 0, 1, at)
  } finally {
    fs.closeSync(fd)
  }
}
