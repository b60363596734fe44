/**
 * The `ideal` row: not a store but the lower bound any content-addressed store of this series could
 * reach with independent blocks — the distinct 4 KiB pages of ram* files and the distinct 64 KiB
 * clusters of the others over the checkpoints so far, each compressed on its own with zstd -1.
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { chunkOf } from './synth.js'

interface ZstdCompressor {
  setParameters(p: { compressionLevel: number }): void
  compress(b: Uint8Array): Buffer
}

/** zstd-napi's compressor at level 1, or undefined when the optional package is not installed */
export function zstdLevel1(): ZstdCompressor | undefined {
  try {
    const { Compressor } = createRequire(import.meta.url)('zstd-napi') as { Compressor: new () => ZstdCompressor }
    const c = new Compressor()
    c.setParameters({ compressionLevel: 1 })
    return c
  } catch {
    return undefined
  }
}

export class IdealCounter {
  private readonly seen = new Set<string>()
  /** compressed bytes of the distinct blocks so far */
  total = 0
  /** distinct blocks so far */
  blocks = 0
  constructor(private readonly zstd: ZstdCompressor) {}

  /** adds one checkpoint directory; returns the growth in bytes */
  add(dir: string, files: string[]): number {
    const before = this.total
    const buf = Buffer.allocUnsafe(8 << 20)
    for (const f of files) {
      const unit = chunkOf(f)
      const fd = fs.openSync(path.join(dir, f), 'r')
      try {
        for (let pos = 0; ; ) {
          const n = fs.readSync(fd, buf, 0, buf.length, pos)
          if (n === 0) break
          pos += n
          for (let o = 0; o < n; o += unit) this.block(buf.subarray(o, Math.min(n, o + unit)))
        }
      } finally {
        fs.closeSync(fd)
      }
    }
    return this.total - before
  }

  private block(b: Buffer): void {
    const key = crypto.createHash('sha256').update(b).digest('base64')
    if (this.seen.has(key)) return
    this.seen.add(key)
    this.blocks++
    this.total += this.zstd.compress(b).length
  }
}
