/**
 * Whole-file compression of bundles, as streams (SPEC.md §9): zstd (zstd-napi's streaming
 * codec, when it loads) or gzip (fflate, pure JavaScript, always available). Import recognises either
 * by its magic bytes, so the reader never needs to be told.
 */
import { createRequire } from 'node:module'
import { Readable } from 'node:stream'
import { Gunzip, Gzip } from 'fflate'
import { CkptError } from './errors.js'

export type BundleCompression = 'zstd' | 'gzip' | 'none'

const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd]
const GZIP_MAGIC = [0x1f, 0x8b]

interface ZstdStreams {
  CompressStream: new (opts: { compressionLevel?: number }) => NodeJS.ReadWriteStream
  DecompressStream: new () => NodeJS.ReadWriteStream
}

let zstdStreams: ZstdStreams | null | undefined
function zstd(): ZstdStreams | null {
  if (zstdStreams === undefined) {
    try {
      zstdStreams = createRequire(import.meta.url)('zstd-napi') as ZstdStreams
    } catch {
      zstdStreams = null
    }
  }
  return zstdStreams
}

/** What `--compress` means here: zstd if it loads, else gzip. */
export function defaultBundleCompression(): BundleCompression {
  return zstd() ? 'zstd' : 'gzip'
}

export function bundleCompressionAvailable(kind: BundleCompression): boolean {
  return kind !== 'zstd' || zstd() !== null
}

/** Which compression the first bytes of a stream announce. */
export function detectBundleCompression(head: Uint8Array): BundleCompression {
  if (ZSTD_MAGIC.every((b, i) => head[i] === b)) return 'zstd'
  if (GZIP_MAGIC.every((b, i) => head[i] === b)) return 'gzip'
  return 'none'
}

async function* viaTransform(source: AsyncIterable<Uint8Array>, t: NodeJS.ReadWriteStream): AsyncIterable<Uint8Array> {
  const input = Readable.from(source, { objectMode: false })
  input.on('error', (err) => (t as unknown as { destroy(e: Error): void }).destroy(err))
  input.pipe(t as unknown as NodeJS.WritableStream)
  for await (const chunk of t as unknown as AsyncIterable<Uint8Array>) yield chunk
}

/** fflate's callback streams as an async generator, one input chunk at a time (bounded memory). */
async function* viaFflate(source: AsyncIterable<Uint8Array>, make: (ondata: (d: Uint8Array, final: boolean) => void) => { push(d: Uint8Array, final?: boolean): void }): AsyncIterable<Uint8Array> {
  let out: Uint8Array[] = []
  const s = make((d) => {
    if (d.length > 0) out.push(d)
  })
  for await (const chunk of source) {
    s.push(chunk, false)
    if (out.length) {
      const ready = out
      out = []
      yield* ready
    }
  }
  s.push(new Uint8Array(0), true)
  yield* out
}

export function compressBundle(kind: BundleCompression, source: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  if (kind === 'none') return source
  if (kind === 'gzip') return viaFflate(source, (ondata) => new Gzip({ level: 1 }, ondata))
  const z = zstd()
  if (!z) throw new CkptError('CKPT_CODEC_UNAVAILABLE', 'zstd bundle compression needs the optional zstd-napi package; use gzip', { codec: 'zstd' })
  return viaTransform(source, new z.CompressStream({ compressionLevel: 3 }))
}

/**
 * The bundle's bytes, decompressed if its first bytes say zstd or gzip. Corrupt or truncated
 * compressed data is CKPT_BAD_BUNDLE.
 */
export async function* decompressBundle(source: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  const it = source[Symbol.asyncIterator]()
  // errors of the source itself (a failing read) are I/O errors, not a corrupt bundle
  const next = async () => {
    try {
      return await it.next()
    } catch (err) {
      if (err instanceof CkptError) throw err
      throw new CkptError('CKPT_IO', `reading the bundle failed: ${(err as Error).message}`, {}, err)
    }
  }
  let head = new Uint8Array(0)
  let ended = false
  while (head.length < 4) {
    const r = await next()
    if (r.done) {
      ended = true
      break
    }
    const n = new Uint8Array(head.length + r.value.length)
    n.set(head)
    n.set(r.value, head.length)
    head = n
  }
  const rest = async function* () {
    if (head.length) yield head
    if (ended) return
    for (;;) {
      const r = await next()
      if (r.done) return
      yield r.value
    }
  }
  const kind = detectBundleCompression(head)
  if (kind === 'none') {
    yield* rest()
    return
  }
  try {
    if (kind === 'gzip') {
      let finished = false
      for await (const c of viaFflate(rest(), (ondata) => new Gunzip((d, final) => {
        if (final) finished = true
        ondata(d, final)
      }))) yield c
      if (!finished) throw new Error('unexpected end of the gzip stream')
      return
    }
    const z = zstd()
    if (!z) throw new CkptError('CKPT_CODEC_UNAVAILABLE', 'this bundle is zstd-compressed; reading it needs the optional zstd-napi package', { codec: 'zstd' })
    yield* viaTransform(rest(), new z.DecompressStream())
  } catch (err) {
    if (err instanceof CkptError) throw err
    throw new CkptError('CKPT_BAD_BUNDLE', `the bundle's ${kind} compression is corrupt or truncated: ${(err as Error).message}`, { compression: kind }, err)
  }
}
