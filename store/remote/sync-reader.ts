/**
 * Synchronous ranged reads of an s3:// remote (SyncRangeReader): a worker thread owns its own S3 client
 * (built from the same URL and environment) and answers one request at a time through shared memory:
 * the calling thread posts { key, offset, length }, then Atomics.wait()s on the control word until the
 * worker has put the bytes (at most DATA_BYTES per request; a longer read is several requests), a
 * "missing", or an error's code and message (as JSON) in the data buffer. The worker never keeps the
 * process alive (unref); close() ends it. A request unanswered within the timeout (60 s) is
 * CKPT_REMOTE_UNAVAILABLE, and the worker is replaced.
 */
import fs from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { CkptError, type CkptErrorCode } from '../../codecs/errors.js'
import type { SyncRangeReader } from './interface.js'
import { checkKey, cutRange } from './keys.js'
import type { S3StoreOptions } from './s3-store.js'

/** the data buffer: the most one request carries */
export const DATA_BYTES = 16 * 1024 * 1024
/** control words: STATE (0 asked, 1 answered), STATUS (0 bytes, 1 missing, 2 error), LENGTH */
export const STATE = 0
export const STATUS = 1
export const LENGTH = 2

export interface SyncWorkerData {
  url: string
  bucket: string
  prefix: string
  options: S3StoreOptions
  control: SharedArrayBuffer
  data: SharedArrayBuffer
}

function workerScript(): string {
  const compiled = !import.meta.url.endsWith('.ts')
  // run from the TypeScript sources (tests), the worker is the compiled one in dist/
  const url = compiled ? new URL('./sync-reader-worker.js', import.meta.url) : new URL('../../dist/store/remote/sync-reader-worker.js', import.meta.url)
  const file = fileURLToPath(url)
  if (!fs.existsSync(file)) throw new CkptError('CKPT_REMOTE_UNAVAILABLE', `the remote reader's worker script is missing: ${file}${compiled ? '' : ' (npm run build makes it)'}`)
  return file
}

export interface SyncReaderOptions extends S3StoreOptions {
  /** ms to wait for one request's answer (default 60,000) */
  syncTimeoutMs?: number
}

export class S3SyncReader implements SyncRangeReader {
  private worker: Worker | undefined
  private readonly control = new Int32Array(new SharedArrayBuffer(4 * 4))
  private readonly data = new Uint8Array(new SharedArrayBuffer(DATA_BYTES))
  private closed = false
  private readonly timeoutMs: number

  constructor(private readonly url: string, private readonly bucket: string, private readonly prefix: string, private readonly opts: SyncReaderOptions) {
    this.timeoutMs = opts.syncTimeoutMs ?? 60_000
  }

  private start(): Worker {
    if (this.worker) return this.worker
    const env: Record<string, string> = {}
    // the worker gets only what builds its client
    for (const [k, v] of Object.entries(this.opts.env ?? process.env)) if (k.startsWith('AWS_') && v !== undefined) env[k] = v
    const { syncTimeoutMs: _, ...rest } = this.opts
    const workerData: SyncWorkerData = { url: this.url, bucket: this.bucket, prefix: this.prefix, options: { ...rest, env }, control: this.control.buffer as SharedArrayBuffer, data: this.data.buffer as SharedArrayBuffer }
    const w = new Worker(workerScript(), { workerData })
    w.unref()
    // a worker that dies is replaced on the next read; a waiting read times out
    w.on('error', () => {
      if (this.worker === w) this.worker = undefined
    })
    w.on('exit', () => {
      if (this.worker === w) this.worker = undefined
    })
    this.worker = w
    return w
  }

  read(key: string, offset: number, length: number): Uint8Array | undefined {
    if (this.closed) throw new CkptError('CKPT_CLOSED', `the reader of ${this.url} is closed`, { url: this.url })
    checkKey(key)
    cutRange(Number.MAX_SAFE_INTEGER, offset, length)
    if (length === 0) {
      const r = this.request(key, offset, 0)
      return r && new Uint8Array(0)
    }
    const parts: Uint8Array[] = []
    let total = 0
    for (let pos = offset, left = length; left > 0; ) {
      const n = Math.min(left, DATA_BYTES)
      const r = this.request(key, pos, n)
      if (r === undefined) return undefined // missing (or deleted between two requests)
      parts.push(r)
      total += r.length
      if (r.length < n) break // the object's end
      pos += n
      left -= n
    }
    if (parts.length === 1) return parts[0]
    const out = new Uint8Array(total)
    let at = 0
    for (const p of parts) {
      out.set(p, at)
      at += p.length
    }
    return out
  }

  private request(key: string, offset: number, length: number): Uint8Array | undefined {
    const w = this.start()
    Atomics.store(this.control, STATE, 0)
    w.postMessage({ key, offset, length })
    if (Atomics.wait(this.control, STATE, 0, this.timeoutMs) === 'timed-out') {
      this.worker = undefined
      void w.terminate()
      throw new CkptError('CKPT_REMOTE_UNAVAILABLE', `reading ${JSON.stringify(key)} on ${this.url}: no answer within ${this.timeoutMs / 1000} s`, { url: this.url, key, op: 'read' })
    }
    const n = Atomics.load(this.control, LENGTH)
    switch (Atomics.load(this.control, STATUS)) {
      case 0:
        return this.data.slice(0, n)
      case 1:
        return undefined
      default: {
        let e: { code?: string; message?: string; details?: Record<string, unknown> }
        try {
          e = JSON.parse(Buffer.from(this.data.buffer, 0, n).toString('utf8'))
        } catch {
          e = {}
        }
        const code = (e.code?.startsWith('CKPT_') ? e.code : 'CKPT_REMOTE_UNAVAILABLE') as CkptErrorCode
        throw new CkptError(code, e.message ?? `reading ${JSON.stringify(key)} on ${this.url} failed`, e.details ?? { url: this.url, key, op: 'read' })
      }
    }
  }

  close(): void {
    this.closed = true
    const w = this.worker
    this.worker = undefined
    if (w) void w.terminate()
  }
}
