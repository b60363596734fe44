/**
 * Dirty hints from a copy: an adapter that keeps what it stored last (a shadow) finds the chunks an
 * emulator changed by comparing, 64 KiB blocks first (most are unchanged), then the chunks of a
 * block that differs. Shared by the v86 and QEMU adapters.
 */
import fs from 'node:fs'
import { CkptError } from '../../codecs/errors.js'

const BLOCK = 64 << 10
const view = (u8: Uint8Array) => Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength)

/**
 * The bytes the shadow held for the dirty chunks before they were refreshed, chunk k of the dirty list
 * at k × chunkSize (RegionInput.previous: the library stores changed chunks against them).
 */
export class Aside {
  private buf = Buffer.allocUnsafe(0)
  private n = 0

  constructor(private readonly chunkSize: number) {}

  keep(from: Buffer, start: number, end: number): void {
    const at = this.n * this.chunkSize
    if (this.buf.length < at + this.chunkSize) {
      const grown = Buffer.allocUnsafe(Math.max(2 * this.buf.length, at + this.chunkSize, 1 << 20))
      this.buf.copy(grown, 0, 0, at)
      this.buf = grown
    }
    from.copy(this.buf, at, start, end)
    this.n++
  }

  /** the kept chunks (a view: valid until the next keep) */
  get bytes(): Uint8Array {
    return this.buf.subarray(0, this.n * this.chunkSize)
  }
}

/**
 * Compares `now[nowStart, nowStart + len)` with `shadow[shadowStart, …)`, copies each differing chunk
 * into the shadow and pushes its chunk index (counted in the shadow, `chunkSize` apart) onto `dirty`;
 * with `aside`, the shadow's bytes of that chunk are kept there first. `shadowStart` is a multiple of
 * `chunkSize`; the last chunk may be short.
 */
export function refreshChunks(now: Uint8Array, nowStart: number, shadow: Uint8Array, shadowStart: number, len: number, chunkSize: number, dirty: number[], aside?: Aside): void {
  const a = view(now)
  const s = view(shadow)
  const block = Math.max(chunkSize, BLOCK)
  for (let b = 0; b < len; b += block) {
    const be = Math.min(b + block, len)
    if (a.compare(s, shadowStart + b, shadowStart + be, nowStart + b, nowStart + be) === 0) continue
    for (let o = b; o < be; o += chunkSize) {
      const e = Math.min(o + chunkSize, be)
      if (a.compare(s, shadowStart + o, shadowStart + e, nowStart + o, nowStart + e) !== 0) {
        dirty.push((shadowStart + o) / chunkSize)
        aside?.keep(s, shadowStart + o, shadowStart + e)
        a.copy(s, shadowStart + o, nowStart + o, nowStart + e)
      }
    }
  }
}

const PIECE = 8 << 20
let pieceBuf: Buffer | undefined

/**
 * Reads the file into `shadow`, returning the chunks that differed (copied into shadow as it goes)
 * and, in `previous`, what the shadow held for them before (RegionInput.previous).
 */
export function refreshShadow(file: string, shadow: Buffer, chunkSize: number): { dirty: number[]; previous: Uint8Array } {
  const dirty: number[] = []
  const aside = new Aside(chunkSize)
  const tmp = (pieceBuf ??= Buffer.allocUnsafe(PIECE))
  const fd = fs.openSync(file, 'r')
  try {
    for (let off = 0; off < shadow.length; off += PIECE) {
      const len = Math.min(PIECE, shadow.length - off)
      let got = 0
      while (got < len) {
        const n = fs.readSync(fd, tmp, got, len - got, off + got)
        if (n === 0) throw new CkptError('CKPT_WRONG_SIZE', `${file} shrank while it was read`, { path: file })
        got += n
      }
      refreshChunks(tmp, 0, shadow, off, len, chunkSize, dirty, aside)
    }
  } finally {
    fs.closeSync(fd)
  }
  return { dirty, previous: aside.bytes }
}

export function readWhole(file: string, size: number): Buffer {
  const b = Buffer.allocUnsafe(size)
  const fd = fs.openSync(file, 'r')
  try {
    let got = 0
    while (got < size) {
      const n = fs.readSync(fd, b, got, Math.min(size - got, 1 << 30), got)
      if (n === 0) throw new CkptError('CKPT_WRONG_SIZE', `${file} shrank while it was read`, { path: file })
      got += n
    }
  } finally {
    fs.closeSync(fd)
  }
  return b
}
