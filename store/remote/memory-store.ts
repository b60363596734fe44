/**
 * memory://NAME: a process-wide map of keys to bytes per NAME (unit tests). Every operation is
 * atomic, so put({ ifNoneMatch }) is a true create-if-absent.
 */
import type { GetOptions, ObjectInfo, ObjectStore, PutOptions, SyncRangeReader } from './interface.js'
import { checkKey, compareKeys, cutRange, newStats } from './keys.js'

const spaces = new Map<string, Map<string, Uint8Array>>()

function space(name: string): Map<string, Uint8Array> {
  let s = spaces.get(name)
  if (!s) spaces.set(name, (s = new Map()))
  return s
}

/** Forgets memory://NAME's objects (tests). */
export function dropMemoryStore(name: string): void {
  spaces.delete(name)
}

export class MemoryObjectStore implements ObjectStore {
  readonly conditionalCreate = true
  readonly stats = newStats()
  private readonly objects: Map<string, Uint8Array>

  constructor(readonly url: string, name: string) {
    this.objects = space(name)
  }

  async get(key: string, opts: GetOptions = {}): Promise<Uint8Array | undefined> {
    checkKey(key)
    opts.signal?.throwIfAborted()
    this.stats.gets++
    const o = this.objects.get(key)
    if (!o) return undefined
    const [a, b] = cutRange(o.length, opts.offset, opts.length)
    this.stats.bytesIn += b - a
    return o.slice(a, b)
  }

  async head(key: string, opts: { signal?: AbortSignal } = {}): Promise<{ size: number } | undefined> {
    checkKey(key)
    opts.signal?.throwIfAborted()
    this.stats.heads++
    const o = this.objects.get(key)
    return o ? { size: o.length } : undefined
  }

  async put(key: string, body: Uint8Array, opts: PutOptions = {}): Promise<boolean> {
    checkKey(key)
    opts.signal?.throwIfAborted()
    this.stats.puts++
    if (opts.ifNoneMatch && this.objects.has(key)) return false
    this.objects.set(key, body.slice())
    this.stats.bytesOut += body.length
    return true
  }

  async *list(prefix: string, opts: { startAfter?: string; signal?: AbortSignal } = {}): AsyncIterable<ObjectInfo> {
    const keys = [...this.objects.keys()].filter((k) => k.startsWith(prefix) && (opts.startAfter === undefined || compareKeys(k, opts.startAfter) > 0)).sort(compareKeys)
    // pages of 1000, as a server gives them
    for (let i = 0; i < keys.length; i += 1000) {
      opts.signal?.throwIfAborted()
      this.stats.lists++
      for (const key of keys.slice(i, i + 1000)) {
        const o = this.objects.get(key)
        if (o) yield { key, size: o.length }
      }
    }
    if (keys.length === 0) this.stats.lists++
  }

  async delete(key: string): Promise<void> {
    checkKey(key)
    this.stats.deletes++
    this.objects.delete(key)
  }

  async close(): Promise<void> {}
}

export function memorySyncReader(name: string): SyncRangeReader {
  const objects = space(name)
  return {
    read(key: string, offset: number, length: number): Uint8Array | undefined {
      checkKey(key)
      const o = objects.get(key)
      if (!o) return undefined
      const [a, b] = cutRange(o.length, offset, length)
      return o.slice(a, b)
    },
    close(): void {},
  }
}
