/**
 * s3://BUCKET/PREFIX: an object store on AWS S3 or a compatible server (Ceph RADOS Gateway, MinIO,
 * s3rver). The SDK (@aws-sdk/client-s3) is loaded when the first such store opens, never by commands
 * that use no remote. Credentials, region and endpoint come from the environment given (opts.env, else
 * process.env): AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION (us-east-1),
 * AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (then path-style addressing). Object keys are PREFIX/KEY.
 *
 * Conditional create: put({ ifNoneMatch }) sends If-None-Match: * (412 -> false). Some servers
 * (s3rver) ignore that header; the first conditional put of a store finds out by creating a probe
 * object (PREFIX/.probe/RANDOM) twice, and when the second create succeeds too, conditionalCreate
 * turns false and conditional puts become HEAD, then PUT (a racing writer can slip between). The probe
 * costs two PUTs and a DELETE once per store, counted in stats.
 */
import crypto from 'node:crypto'
import type { S3Client } from '@aws-sdk/client-s3'
import { CkptError } from '../../codecs/errors.js'
import type { GetOptions, ObjectInfo, ObjectStore, PutOptions } from './interface.js'
import { checkKey, cutRange, newStats, redactUrl } from './keys.js'

type Sdk = typeof import('@aws-sdk/client-s3')
let sdk: Promise<Sdk> | undefined

/** The S3 SDK, loaded once, on first use. */
export function loadS3Sdk(): Promise<Sdk> {
  sdk ??= import('@aws-sdk/client-s3').catch((err) => {
    sdk = undefined
    throw new CkptError('CKPT_REMOTE_UNAVAILABLE', `the S3 client library (@aws-sdk/client-s3) cannot be loaded: ${(err as Error).message}`)
  })
  return sdk
}

export interface S3StoreOptions {
  /** where AWS_* come from (default process.env); never written anywhere */
  env?: Record<string, string | undefined>
  /** attempts per request, the first included (SDK standard retry; default 4) */
  maxAttempts?: number
  /** ms to connect (default 10,000) */
  connectTimeoutMs?: number
  /** ms a connection may sit idle in a request (default 60,000) */
  socketTimeoutMs?: number
  /** whether the server enforces If-None-Match, when an earlier probe found out (no probe then) */
  conditionalCreate?: boolean
}

/** bodies above this go in parts */
export const MULTIPART_THRESHOLD = 32 * 1024 * 1024
export const PART_SIZE = 8 * 1024 * 1024
const PARTS_IN_FLIGHT = 4
const PAGE = 1000

export interface S3Settings {
  bucket: string
  prefix: string
  region: string
  endpoint?: string
  accessKeyId: string
  secretAccessKey: string
  sessionToken?: string
}

/** The settings a store (or a sync reader's worker) builds its client from; CKPT_REMOTE_AUTH without keys. */
export function s3Settings(url: string, bucket: string, prefix: string, env: Record<string, string | undefined>): S3Settings {
  const accessKeyId = env.AWS_ACCESS_KEY_ID
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY
  if (!accessKeyId || !secretAccessKey) {
    throw new CkptError('CKPT_REMOTE_AUTH', `no credentials for ${url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY`, { url })
  }
  const endpoint = env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL || undefined
  if (endpoint !== undefined) {
    let u: URL | undefined
    try {
      u = new URL(endpoint)
    } catch {
      u = undefined
    }
    if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:') || u.username || u.password) {
      throw new CkptError('CKPT_BAD_REMOTE', `bad S3 endpoint ${JSON.stringify(redactUrl(endpoint))} (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL): expected http(s)://HOST[:PORT]`, { url })
    }
  }
  const region = env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1'
  return { bucket, prefix, region, endpoint, accessKeyId, secretAccessKey, sessionToken: env.AWS_SESSION_TOKEN || undefined }
}

export async function makeS3Client(s: S3Settings, opts: S3StoreOptions): Promise<S3Client> {
  const { S3Client } = await loadS3Sdk()
  const agent = { keepAlive: true, maxSockets: 32 }
  // the pinned SDK runs on Node 20 but warns there that later releases will not: not the user's concern
  const emit = process.emitWarning
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    if (String(warning).includes('NodeVersionSupportWarning')) return
    ;(emit as (...a: unknown[]) => void).call(process, warning, ...rest)
  }) as typeof process.emitWarning
  try {
    return new S3Client({
      region: s.region,
      endpoint: s.endpoint,
      forcePathStyle: s.endpoint !== undefined,
      credentials: { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey, sessionToken: s.sessionToken },
      maxAttempts: opts.maxAttempts ?? 4,
      retryMode: 'standard',
      // other servers than AWS may not know the newer checksum headers; blocks are BLAKE3-verified anyway
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      // the endpoint is the one from the env given, not whatever process.env holds
      ignoreConfiguredEndpointUrls: true,
      requestHandler: { connectionTimeout: opts.connectTimeoutMs ?? 10_000, socketTimeout: opts.socketTimeoutMs ?? 60_000, httpAgent: agent, httpsAgent: agent },
    })
  } finally {
    process.emitWarning = emit
  }
}

type Outcome = 'missing' | 'precondition' | 'conflict' | 'range' | 'auth' | 'no-bucket' | 'unsupported' | 'aborted' | 'unavailable'

interface SdkError {
  name?: string
  code?: string
  message?: string
  $metadata?: { httpStatusCode?: number }
}

/** What an SDK failure means to the store. */
export function classifyS3Error(err: unknown): Outcome {
  const e = (err ?? {}) as SdkError
  const status = e.$metadata?.httpStatusCode
  const name = e.name ?? ''
  if (name === 'AbortError') return 'aborted'
  if (name === 'NoSuchBucket') return 'no-bucket'
  if (name === 'NoSuchKey' || name === 'NotFound' || status === 404) return 'missing'
  if (name === 'PreconditionFailed' || status === 412) return 'precondition'
  if (name === 'ConditionalRequestConflict' || status === 409) return 'conflict'
  if (name === 'InvalidRange' || status === 416) return 'range'
  if (status === 401 || status === 403 || ['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken', 'InvalidToken'].includes(name)) return 'auth'
  if (status === 501 || name === 'NotImplemented') return 'unsupported'
  return 'unavailable'
}

export class S3ObjectStore implements ObjectStore {
  readonly stats = newStats()
  private readonly root: string
  /** undefined until the first conditional put probes the server */
  private honoured: boolean | undefined
  private probing: Promise<boolean> | undefined

  private constructor(readonly url: string, private readonly s: S3Settings, private readonly client: S3Client, private readonly lib: Sdk) {
    this.root = s.prefix === '' ? '' : s.prefix + '/'
  }

  static async open(url: string, bucket: string, prefix: string, opts: S3StoreOptions = {}): Promise<S3ObjectStore> {
    const s = s3Settings(url, bucket, prefix, opts.env ?? process.env)
    const lib = await loadS3Sdk()
    const store = new S3ObjectStore(url, s, await makeS3Client(s, opts), lib)
    store.honoured = opts.conditionalCreate
    return store
  }

  /** What the probe found (undefined: no conditional put yet, nothing known) — callers may keep it for the next open. */
  get conditionalCreateKnown(): boolean | undefined {
    return this.honoured
  }

  /** true until a probe shows the server ignores If-None-Match (then conditional puts are HEAD + PUT) */
  get conditionalCreate(): boolean {
    return this.honoured !== false
  }

  private fail(err: unknown, op: string, key: string, outcome = classifyS3Error(err)): Error {
    if (outcome === 'aborted') return err as Error
    const e = (err ?? {}) as SdkError
    const status = e.$metadata?.httpStatusCode
    const details: Record<string, unknown> = { url: this.url, key, op, ...(status ? { status } : {}), ...(e.name ? { s3Code: e.name } : {}) }
    const what = `${op} ${JSON.stringify(key)} on ${this.url}`
    if (outcome === 'auth') return new CkptError('CKPT_REMOTE_AUTH', `${what}: the server refused the credentials or the access (${e.name ?? 'HTTP ' + status})`, details)
    if (outcome === 'no-bucket') return new CkptError('CKPT_BAD_REMOTE', `${what}: no bucket ${JSON.stringify(this.s.bucket)} on ${this.s.endpoint ?? 'AWS S3'}`, details)
    const why = status ? `HTTP ${status} ${e.name ?? ''}`.trim() : `${e.code ?? e.name ?? 'error'}: ${e.message ?? String(err)}`
    return new CkptError('CKPT_REMOTE_UNAVAILABLE', `${what} failed: ${why}`, details)
  }

  private async send<T>(command: unknown, signal?: AbortSignal): Promise<T> {
    return (await this.client.send(command as never, signal ? { abortSignal: signal } : undefined)) as T
  }

  async get(key: string, opts: GetOptions = {}): Promise<Uint8Array | undefined> {
    checkKey(key)
    const offset = opts.offset ?? 0
    cutRange(Number.MAX_SAFE_INTEGER, offset, opts.length)
    if (opts.length === 0) return (await this.head(key, opts)) ? new Uint8Array(0) : undefined
    const ranged = offset !== 0 || opts.length !== undefined
    const range = ranged ? `bytes=${offset}-${opts.length === undefined ? '' : offset + opts.length - 1}` : undefined
    for (let attempt = 1; ; attempt++) {
      this.stats.gets++
      let r: { Body?: { transformToByteArray(): Promise<Uint8Array>; destroy?(): void }; ContentRange?: string }
      try {
        r = await this.send(new this.lib.GetObjectCommand({ Bucket: this.s.bucket, Key: this.root + key, Range: range }), opts.signal)
      } catch (err) {
        const outcome = classifyS3Error(err)
        if (outcome === 'missing') return undefined
        if (outcome === 'range') return new Uint8Array(0) // the object is there; the range begins past its end
        throw this.fail(err, 'get', key, outcome)
      }
      // "bytes FIRST-LAST/SIZE": where the bytes sent begin (s3rver may send more than asked)
      const cr = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(r.ContentRange ?? '')
      if (cr?.[3] === '0') {
        // an empty object (s3rver announces one byte of it and then breaks the connection)
        r.Body?.destroy?.()
        return new Uint8Array(0)
      }
      let bytes: Uint8Array
      try {
        bytes = r.Body ? await r.Body.transformToByteArray() : new Uint8Array(0)
      } catch (err) {
        // the body broke off midway: the SDK retries only until the headers came
        if (attempt < 4 && classifyS3Error(err) === 'unavailable') continue
        throw this.fail(err, 'get', key)
      }
      this.stats.bytesIn += bytes.length
      if (!ranged) return bytes
      // no Content-Range: a server that ignored the Range header sent the whole object
      const first = cr ? Number(cr[1]) : 0
      if (first > offset) throw this.fail(new Error(`asked for bytes from ${offset}, got from ${first}`), 'get', key, 'unavailable')
      const from = offset - first
      const to = opts.length === undefined ? bytes.length : Math.min(bytes.length, from + opts.length)
      return from === 0 && to === bytes.length ? bytes : bytes.subarray(Math.min(from, bytes.length), to)
    }
  }

  async head(key: string, opts: { signal?: AbortSignal } = {}): Promise<{ size: number } | undefined> {
    checkKey(key)
    this.stats.heads++
    try {
      const r = await this.send<{ ContentLength?: number }>(new this.lib.HeadObjectCommand({ Bucket: this.s.bucket, Key: this.root + key }), opts.signal)
      return { size: r.ContentLength ?? 0 }
    } catch (err) {
      const outcome = classifyS3Error(err)
      if (outcome === 'missing') return undefined
      throw this.fail(err, 'head', key, outcome)
    }
  }

  async put(key: string, body: Uint8Array, opts: PutOptions = {}): Promise<boolean> {
    checkKey(key)
    if (!(body instanceof Uint8Array)) throw new TypeError('an object body is a Uint8Array')
    if (!opts.ifNoneMatch) return this.write(key, body, false, opts.signal)
    const honoured = await this.probe(opts.signal)
    // a big body is not sent at all when the key is there; a server that ignores If-None-Match gets HEAD + PUT
    if ((!honoured || body.length > MULTIPART_THRESHOLD) && (await this.head(key, opts))) return false
    return this.write(key, body, honoured, opts.signal)
  }

  /** One PUT (or a multipart upload); false when conditional and the key existed. */
  private async write(key: string, body: Uint8Array, conditional: boolean, signal?: AbortSignal): Promise<boolean> {
    if (body.length > MULTIPART_THRESHOLD) return this.writeParts(key, body, conditional, signal)
    for (let attempt = 1; ; attempt++) {
      this.stats.puts++
      try {
        await this.send(new this.lib.PutObjectCommand({ Bucket: this.s.bucket, Key: this.root + key, Body: body, ContentLength: body.length, IfNoneMatch: conditional ? '*' : undefined }), signal)
        this.stats.bytesOut += body.length
        return true
      } catch (err) {
        const outcome = classifyS3Error(err)
        if (conditional && outcome === 'precondition') return false
        // AWS: a conditional write raced another one in flight; the retry sees the winner
        if (conditional && outcome === 'conflict' && attempt < 4) {
          await new Promise((r) => setTimeout(r, 50 * attempt))
          continue
        }
        throw this.fail(err, 'put', key, outcome)
      }
    }
  }

  private async writeParts(key: string, body: Uint8Array, conditional: boolean, signal?: AbortSignal): Promise<boolean> {
    const Key = this.root + key
    const Bucket = this.s.bucket
    this.stats.puts++
    let uploadId: string
    try {
      const r = await this.send<{ UploadId?: string }>(new this.lib.CreateMultipartUploadCommand({ Bucket, Key }), signal)
      if (!r.UploadId) throw new Error('no UploadId in the answer to CreateMultipartUpload')
      uploadId = r.UploadId
    } catch (err) {
      throw this.fail(err, 'put', key)
    }
    const count = Math.ceil(body.length / PART_SIZE)
    const etags: string[] = new Array(count)
    let next = 0
    const inner = new AbortController()
    const onAbort = () => inner.abort(signal?.reason)
    signal?.addEventListener('abort', onAbort, { once: true })
    const lane = async () => {
      while (next < count) {
        const i = next++
        const part = body.subarray(i * PART_SIZE, Math.min(body.length, (i + 1) * PART_SIZE))
        this.stats.puts++
        const r = await this.send<{ ETag?: string }>(new this.lib.UploadPartCommand({ Bucket, Key, UploadId: uploadId, PartNumber: i + 1, Body: part, ContentLength: part.length }), inner.signal)
        this.stats.bytesOut += part.length
        etags[i] = r.ETag ?? ''
      }
    }
    try {
      const lanes = Array.from({ length: Math.min(PARTS_IN_FLIGHT, count) }, () => lane().catch((err) => {
        inner.abort(err)
        throw err
      }))
      const settled = await Promise.allSettled(lanes)
      const failed = settled.find((x) => x.status === 'rejected')
      if (failed) throw (failed as PromiseRejectedResult).reason
      this.stats.puts++
      await this.send(
        new this.lib.CompleteMultipartUploadCommand({ Bucket, Key, UploadId: uploadId, MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) }, IfNoneMatch: conditional ? '*' : undefined }),
        signal,
      )
      return true
    } catch (err) {
      this.stats.deletes++
      await this.send(new this.lib.AbortMultipartUploadCommand({ Bucket, Key, UploadId: uploadId })).catch(() => undefined)
      const outcome = classifyS3Error(err)
      if (conditional && outcome === 'precondition') return false
      throw this.fail(err, 'put', key, outcome)
    } finally {
      signal?.removeEventListener('abort', onAbort)
    }
  }

  /** Does the server enforce If-None-Match: *? Found out once per store (see the file's head). */
  private probe(signal?: AbortSignal): Promise<boolean> {
    if (this.honoured !== undefined) return Promise.resolve(this.honoured)
    this.probing ??= (async () => {
      const key = `.probe/${crypto.randomBytes(12).toString('hex')}`
      const bytes = new TextEncoder().encode('ckpt: does this server enforce If-None-Match?\n')
      // a server that refuses the header (501) does not enforce it either
      const create = () => this.write(key, bytes, true, signal).catch((err) => {
        if (err instanceof CkptError && err.details.status === 501) return undefined
        throw err
      })
      try {
        const first = await create()
        const second = first === undefined ? true : await create()
        this.honoured = second === false
        return this.honoured
      } finally {
        this.probing = undefined
        await this.delete(key).catch(() => undefined)
      }
    })()
    return this.probing
  }

  async *list(prefix: string, opts: { startAfter?: string; signal?: AbortSignal } = {}): AsyncIterable<ObjectInfo> {
    if (typeof prefix !== 'string') throw new TypeError('a list prefix is a string')
    let token: string | undefined
    let after = opts.startAfter === undefined ? undefined : this.root + opts.startAfter
    for (;;) {
      this.stats.lists++
      let r: { Contents?: { Key?: string; Size?: number }[]; IsTruncated?: boolean; NextContinuationToken?: string }
      try {
        r = await this.send(
          new this.lib.ListObjectsV2Command({ Bucket: this.s.bucket, Prefix: this.root + prefix, MaxKeys: PAGE, ContinuationToken: token, StartAfter: token ? undefined : after }),
          opts.signal,
        )
      } catch (err) {
        throw this.fail(err, 'list', prefix)
      }
      let last: string | undefined
      for (const o of r.Contents ?? []) {
        if (o.Key === undefined || !o.Key.startsWith(this.root)) continue
        last = o.Key
        yield { key: o.Key.slice(this.root.length), size: o.Size ?? 0 }
      }
      if (!r.IsTruncated) return
      if (r.NextContinuationToken) token = r.NextContinuationToken
      else if (last !== undefined) {
        // a server that pages without tokens: go on after the last key
        token = undefined
        after = last
      } else throw this.fail(new Error('a truncated listing with no continuation'), 'list', prefix, 'unavailable')
    }
  }

  async delete(key: string): Promise<void> {
    checkKey(key)
    this.stats.deletes++
    try {
      await this.send(new this.lib.DeleteObjectCommand({ Bucket: this.s.bucket, Key: this.root + key }))
    } catch (err) {
      const outcome = classifyS3Error(err)
      if (outcome === 'missing') return
      throw this.fail(err, 'delete', key, outcome)
    }
  }

  async close(): Promise<void> {
    this.client.destroy()
  }
}
