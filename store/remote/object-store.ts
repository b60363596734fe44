/**
 * Object stores by URL (SPEC.md §22): s3://BUCKET/PREFIX, file:///ABSOLUTE/DIR, memory://NAME. The
 * S3 client library loads only when an s3:// store or reader opens.
 */
import type { ObjectStore, SyncRangeReader } from './interface.js'
import { parseRemoteUrl } from './keys.js'
import { FileObjectStore, fileSyncReader } from './file-store.js'
import { MemoryObjectStore, memorySyncReader } from './memory-store.js'
import { S3ObjectStore, s3Settings } from './s3-store.js'
import { S3SyncReader, type SyncReaderOptions } from './sync-reader.js'

export { parseRemoteUrl, redactUrl } from './keys.js'
export type { RemoteUrl } from './keys.js'
export { dropMemoryStore } from './memory-store.js'

export interface OpenObjectStoreOptions {
  /** where AWS_* come from (default process.env) */
  env?: Record<string, string | undefined>
  /** s3: attempts per request, the first included (default 4) */
  maxAttempts?: number
  /** s3: ms to connect (default 10,000) */
  connectTimeoutMs?: number
  /** s3: ms a connection may sit idle within a request (default 60,000) */
  socketTimeoutMs?: number
  /** s3: whether the server enforces If-None-Match, as a probe found earlier (skips the probe) */
  conditionalCreate?: boolean
}

/** The object store at `url`; CKPT_BAD_REMOTE for a URL that names none. */
export async function openObjectStore(url: string, opts: OpenObjectStoreOptions = {}): Promise<ObjectStore> {
  const u = parseRemoteUrl(url)
  switch (u.scheme) {
    case 'memory':
      return new MemoryObjectStore(url, u.name!)
    case 'file':
      return FileObjectStore.open(url, u.path!)
    case 's3':
      return S3ObjectStore.open(url, u.bucket!, u.prefix, opts)
  }
}

export interface OpenSyncReaderOptions extends OpenObjectStoreOptions {
  /** s3: ms to wait for one request's answer before CKPT_REMOTE_UNAVAILABLE (default 60,000) */
  syncTimeoutMs?: number
}

/**
 * Synchronous ranged reads of the store at `url`: memory and file read directly, s3 through a worker
 * thread (started on the first read; close() ends it).
 */
export function openSyncReader(url: string, opts: OpenSyncReaderOptions = {}): SyncRangeReader {
  const u = parseRemoteUrl(url)
  switch (u.scheme) {
    case 'memory':
      return memorySyncReader(u.name!)
    case 'file':
      return fileSyncReader(url, u.path!)
    case 's3': {
      const o: SyncReaderOptions = { ...opts }
      s3Settings(url, u.bucket!, u.prefix, opts.env ?? process.env) // no credentials, a bad endpoint: said now
      return new S3SyncReader(url, u.bucket!, u.prefix, o)
    }
  }
}
