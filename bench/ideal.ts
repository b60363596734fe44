/**
 * The "ideal" lower bound of issue 2 (bench/peers/ideal.ts computes the same for the peers series): distinct non-zero chunks of the
 * series so far (4 KiB pages of RAM, 64 KiB clusters of disk), each compressed on its own with zstd -1.
 * Uses the project's public codecs for hashing and compression (zstd level 1 when it loads).
 */
import { blake3, deflateCompressor, zstdCompressor } from '../codecs/index.js'

export class IdealSize {
  private readonly seen = new Set<string>()
  bytes = 0
  chunks = 0
  private readonly comp = zstdCompressor() ?? deflateCompressor()
  private readonly zero = new Uint8Array(65536)

  add(chunk: Uint8Array): void {
    if (Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length).equals(this.zero.subarray(0, chunk.length))) return
    const k = Buffer.from(blake3(chunk)).toString('latin1')
    if (this.seen.has(k)) return
    this.seen.add(k)
    this.chunks++
    // compressed alone, as `zstd -1` writes it (incompressible chunks included at their zstd size)
    this.bytes += this.comp.compress(chunk).length
  }

  addUnits(img: Uint8Array, unit: number, indexes?: ArrayLike<number>): void {
    if (indexes) for (let k = 0; k < indexes.length; k++) this.add(img.subarray(indexes[k]! * unit, (indexes[k]! + 1) * unit))
    else for (let at = 0; at < img.length; at += unit) this.add(img.subarray(at, at + unit))
  }
}
