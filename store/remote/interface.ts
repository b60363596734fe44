/**
 * An object store, as the remotes need it (SPEC.md §22): immutable objects named by keys, ranged reads,
 * create-if-absent. Implementations: memory (tests), file:///DIR (a directory; also NFS), and
 * s3://BUCKET/PREFIX (AWS S3, Ceph RADOS Gateway, MinIO, …). Missing is a value (undefined / false),
 * never an error; errors are CkptErrors: CKPT_REMOTE_UNAVAILABLE (network, server errors after
 * retries), CKPT_REMOTE_AUTH (credentials refused), CKPT_BAD_REMOTE (a bad URL, no such bucket).
 */

export interface ObjectInfo {
  key: string
  size: number
}

export interface GetOptions {
  /** a byte range: from offset, length bytes (a range past the end is cut at the end) */
  offset?: number
  length?: number
  signal?: AbortSignal
}

export interface PutOptions {
  /** create only: false (nothing written) when the key exists (If-None-Match: *) */
  ifNoneMatch?: boolean
  signal?: AbortSignal
}

/** Requests made and bytes moved since the store was opened (tests count PUTs; the bench prints them). */
export interface ObjectStoreStats {
  gets: number
  heads: number
  puts: number
  lists: number
  deletes: number
  bytesIn: number
  bytesOut: number
}

export interface ObjectStore {
  /** where it is, for messages: never holds a credential */
  readonly url: string
  /**
   * put({ ifNoneMatch }) holds against a racing writer (the server enforces If-None-Match; a directory
   * creates with link(2)). false (s3rver): the check is a HEAD before the PUT, a race can slip through.
   */
  readonly conditionalCreate: boolean
  /** what a probe of the server found, when one ran (s3): a caller may pass it to the next open */
  readonly conditionalCreateKnown?: boolean
  readonly stats: ObjectStoreStats
  /** The object's bytes (or the range); undefined when it is missing. */
  get(key: string, opts?: GetOptions): Promise<Uint8Array | undefined>
  head(key: string, opts?: { signal?: AbortSignal }): Promise<{ size: number } | undefined>
  /** true: written; false: ifNoneMatch and the key existed (nothing written). Big bodies go in parts. */
  put(key: string, body: Uint8Array, opts?: PutOptions): Promise<boolean>
  /** Keys under prefix, ascending, paged through (never a whole bucket unless prefix is ''). */
  list(prefix: string, opts?: { startAfter?: string; signal?: AbortSignal }): AsyncIterable<ObjectInfo>
  /** Deletes (nothing if missing). */
  delete(key: string): Promise<void>
  close(): Promise<void>
}

/**
 * Ranged reads from the calling thread, synchronously: the block store's reads are synchronous (a
 * lazily pulled block is read where a local one would be). file:// and memory read directly; s3 asks a
 * worker thread and waits on a SharedArrayBuffer (Atomics.wait).
 */
export interface SyncRangeReader {
  /** bytes [offset, offset+length) of key (fewer at the object's end); undefined when it is missing */
  read(key: string, offset: number, length: number): Uint8Array | undefined
  close(): void
}
