/**
 * The ordered key-value interface the store keeps its index, catalog, refs and metadata in.
 * "Missing" is a value (undefined), not an error: the caller decides whether it is one.
 * Two implementations run the same conformance suite: LevelKV (LevelDB on disk) and MemoryKV (tests).
 */
export interface KVRange {
  gte?: Uint8Array
  gt?: Uint8Array
  lte?: Uint8Array
  lt?: Uint8Array
  reverse?: boolean
  limit?: number
}

export type KVOp = { type: 'put'; key: Uint8Array; value: Uint8Array } | { type: 'del'; key: Uint8Array }

export interface KV {
  get(key: Uint8Array): Promise<Uint8Array | undefined>
  /** Synchronous get; the hot "is this block stored?" confirmation uses it. */
  getSync(key: Uint8Array): Uint8Array | undefined
  /** Many keys in one call (restore looks up a leaf's worth of chunk locations at once). */
  getMany(keys: Uint8Array[]): Promise<(Uint8Array | undefined)[]>
  /** Atomic; with sync the call resolves only once the batch is durable. */
  batch(ops: KVOp[], options?: { sync?: boolean }): Promise<void>
  iterate(range: KVRange): AsyncIterable<[Uint8Array, Uint8Array]>
  /** Drops what deletions and overwrites left in the files (gc, after it moved or deleted many entries); optional. */
  compact?(): Promise<void>
  close(): Promise<void>
}

export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!
    if (d !== 0) return d
  }
  return a.length - b.length
}

export function inRange(key: Uint8Array, r: KVRange): boolean {
  if (r.gte && compareBytes(key, r.gte) < 0) return false
  if (r.gt && compareBytes(key, r.gt) <= 0) return false
  if (r.lte && compareBytes(key, r.lte) > 0) return false
  if (r.lt && compareBytes(key, r.lt) >= 0) return false
  return true
}
