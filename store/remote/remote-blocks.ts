/**
 * Blocks a store knows from a remote but holds no copy of yet (a lazy pull, SPEC.md §22.6): the
 * remote's index segments kept under <store>/remotes/ID/index/, and a copy-on-read cache of the
 * remote's packs under <store>/remotes/ID/cache/. The block store asks here when its own index has
 * no entry for a CID (BlockStore's `remote`); the locations it gets name remote packs by numbers from
 * REMOTE_PACK_BASE up, which are never written to the index and mean nothing outside this process.
 *
 * A cache file is the remote pack at the same offsets, filled in 64 KiB extents as they are read
 * (`HASH.have` lists the extents present). Nothing here is trusted: every block read from it is
 * verified against its CID by the block store, and a block that fails is fetched again once
 * (invalidate) before the read fails. A crash can leave an extent listed whose bytes never reached
 * the disk: the same check catches it.
 */
import fs from 'node:fs'
import path from 'node:path'
import { CkptError, fsError } from '../../codecs/errors.js'
import { decodeSegment, ENTRY_FLAGS, findInSegment, packKey, segmentEntry, type Segment } from '../../codecs/remote-format.js'
import type { BlockLocation } from '../block-store.js'
import type { ObjectStore, SyncRangeReader } from './interface.js'
import { openObjectStore, openSyncReader } from './object-store.js'

/** Remote packs are numbered from here (local pack numbers stay far below). */
export const REMOTE_PACK_BASE = 0xc0000000
/** The cache's unit: a read fetches the 64 KiB extents it touches (SPEC.md §22.6). */
export const EXTENT = 64 << 10
/** A synchronous read also fetches up to this many missing extents after what it needs. */
const READ_AHEAD = 2
/** A prefetch joins missing extents into GETs of at most this much. */
const MAX_RUN = 8 << 20
/** GETs a prefetch keeps in flight. */
const IN_FLIGHT = 6

interface RemoteSource {
  id: string
  url: string
  dir: string
  /** where AWS_* come from (default process.env; never written anywhere) */
  env?: Record<string, string | undefined>
  store?: Promise<ObjectStore>
  reader?: SyncRangeReader
}

interface CachedPack {
  source: RemoteSource
  hash: string
  size: number
  fd: number
  have: Uint8Array
  haveFd: number
  /** extents held in memory instead, when the cache file cannot be written (a read-only medium) */
  mem?: Map<number, Uint8Array>
}

export interface RemoteLocation extends BlockLocation {
  kind: number
}

export class RemoteBlocks {
  private readonly segments: { name: string; source: RemoteSource; seg: Segment; slots: number[] }[] = []
  private readonly sources = new Map<string, RemoteSource>()
  private readonly segmentNames = new Set<string>()
  private readonly slotOf = new Map<string, number>()
  private readonly packs: CachedPack[] = []

  private constructor(
    private readonly root: string,
    private readonly readOnly: boolean,
  ) {}

  /** The remote state of the store at `storeDir` (undefined when it has none). */
  static load(storeDir: string, opts: { readOnly?: boolean } = {}): RemoteBlocks | undefined {
    const root = path.join(storeDir, 'remotes')
    let ids: string[]
    try {
      ids = fs.readdirSync(root)
    } catch {
      return undefined
    }
    const r = new RemoteBlocks(root, opts.readOnly === true)
    for (const id of ids.sort()) {
      const source = r.source(id)
      if (!source) continue
      let names: string[] = []
      try {
        names = fs.readdirSync(path.join(source.dir, 'index'))
      } catch {}
      for (const name of names.sort()) {
        if (!/^[0-9a-f]{64}$/.test(name)) continue
        // checked against its name when fetched; here only decoded (a damaged copy that still decodes
        // can only give locations whose entries then fail the read path's checks: never wrong bytes)
        try {
          r.add(source, name, fs.readFileSync(path.join(source.dir, 'index', name)))
        } catch {}
      }
    }
    return r
  }

  /** An empty table for a store that has no remote state yet (its first lazy pull). */
  static empty(storeDir: string): RemoteBlocks {
    return new RemoteBlocks(path.join(storeDir, 'remotes'), false)
  }

  private source(id: string): RemoteSource | undefined {
    let s = this.sources.get(id)
    if (s) return s
    const dir = path.join(this.root, id)
    try {
      const v = JSON.parse(fs.readFileSync(path.join(dir, 'remote.json'), 'utf8')) as { url?: unknown }
      if (typeof v.url !== 'string') return undefined
      s = { id, url: v.url, dir }
    } catch {
      return undefined
    }
    this.sources.set(id, s)
    return s
  }

  /**
   * Registers a remote (its id and URL) so its segments can be saved; returns its directory. `env`:
   * where this process's reads of it take AWS_* from (default process.env).
   */
  register(id: string, url: string, env?: Record<string, string | undefined>): string {
    const dir = path.join(this.root, id)
    fs.mkdirSync(path.join(dir, 'index'), { recursive: true })
    fs.mkdirSync(path.join(dir, 'cache'), { recursive: true })
    const file = path.join(dir, 'remote.json')
    let old: Record<string, unknown> = {}
    try {
      old = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>
    } catch {}
    // a capability learnt of another URL's server does not carry over
    const next = old.url === url ? { ...old, id, url } : { id, url }
    if (JSON.stringify(next) !== JSON.stringify(old)) fs.writeFileSync(file, JSON.stringify(next) + '\n')
    const s = this.sources.get(id)
    if (s) {
      s.url = url
      if (env) s.env = env
    } else this.sources.set(id, { id, url, dir, env })
    return dir
  }

  /** What this store learnt of the server at `url` (a probe's finding), if anything. */
  capability(url: string): { conditionalCreate?: boolean } {
    for (const src of this.sources.values()) {
      if (src.url !== url) continue
      try {
        const v = JSON.parse(fs.readFileSync(path.join(src.dir, 'remote.json'), 'utf8')) as { conditionalCreate?: unknown }
        if (typeof v.conditionalCreate === 'boolean') return { conditionalCreate: v.conditionalCreate }
      } catch {}
    }
    return {}
  }

  /** Keeps what a probe found of remote `id`'s server, so the next open need not probe again. */
  learn(id: string, found: { conditionalCreate?: boolean }): void {
    const src = this.sources.get(id)
    if (!src || found.conditionalCreate === undefined || this.readOnly) return
    const file = path.join(src.dir, 'remote.json')
    try {
      const v = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>
      if (v.conditionalCreate === found.conditionalCreate) return
      fs.writeFileSync(file, JSON.stringify({ ...v, conditionalCreate: found.conditionalCreate }) + '\n')
    } catch {}
  }

  /**
   * An immutable object of remote `id` kept in the store (a catalog segment: its key names its hash),
   * so a later push or pull need not fetch it again; undefined when not kept.
   */
  keptObject(id: string, key: string): Uint8Array | undefined {
    const src = this.sources.get(id)
    if (!src) return undefined
    try {
      return fs.readFileSync(path.join(src.dir, 'objects', encodeURIComponent(key)))
    } catch {
      return undefined
    }
  }

  keepObject(id: string, key: string, bytes: Uint8Array): void {
    const src = this.sources.get(id)
    if (!src || this.readOnly) return
    const dir = path.join(src.dir, 'objects')
    try {
      fs.mkdirSync(dir, { recursive: true })
      const file = path.join(dir, encodeURIComponent(key))
      fs.writeFileSync(`${file}.partial-${process.pid}`, bytes)
      fs.renameSync(`${file}.partial-${process.pid}`, file)
    } catch {}
  }

  hasSegment(name: string): boolean {
    return this.segmentNames.has(name)
  }

  /** Saves a segment fetched from remote `id` (its bytes were checked against its name) and takes it in. */
  saveSegment(id: string, name: string, bytes: Uint8Array): void {
    if (this.segmentNames.has(name)) return
    const source = this.sources.get(id)
    if (!source) throw new TypeError(`remote ${id} is not registered`)
    const file = path.join(source.dir, 'index', name)
    const temp = `${file}.partial-${process.pid}`
    const fd = fs.openSync(temp, 'w')
    try {
      fs.writeSync(fd, bytes)
      fs.fsyncSync(fd)
    } finally {
      fs.closeSync(fd)
    }
    fs.renameSync(temp, file)
    this.add(source, name, bytes)
  }

  private add(source: RemoteSource, name: string, bytes: Uint8Array): void {
    const seg = decodeSegment(bytes)
    const slots = seg.packs.map((p) => {
      let slot = this.slotOf.get(p.hash)
      if (slot === undefined) {
        slot = this.packs.length
        this.slotOf.set(p.hash, slot)
        this.packs.push({ source, hash: p.hash, size: p.size, fd: -1, have: new Uint8Array(Math.ceil(p.size / EXTENT / 8)), haveFd: -1 })
      }
      return slot
    })
    this.segments.push({ name, source, seg, slots })
    this.segmentNames.add(name)
  }

  /** Segments and entries known, for stats and tests. */
  get counts(): { segments: number; entries: number; packs: number } {
    let entries = 0
    for (const s of this.segments) entries += s.seg.count
    return { segments: this.segments.length, entries, packs: this.packs.length }
  }

  /** Where a block is on a remote (the newest segment that lists it), or undefined. */
  locate(cid: Uint8Array): RemoteLocation | undefined {
    for (let k = this.segments.length - 1; k >= 0; k--) {
      const s = this.segments[k]!
      const i = findInSegment(s.seg, cid)
      if (i < 0) continue
      const e = segmentEntry(s.seg, i)
      return { pack: REMOTE_PACK_BASE + s.slots[e.pack]!, offset: e.offset, storedLength: e.storedLength, rawLength: e.rawLength, codec: e.codec, depth: e.depth ?? 0, kind: e.kind }
    }
    return undefined
  }

  /** The segment of remote `id` that lists `cid` (the newest), or undefined: what a push asks ("has the remote this block?"). */
  segmentOf(id: string, cid: Uint8Array, avoid?: ReadonlySet<string>, opts: { subtree?: boolean } = {}): string | undefined {
    for (let k = this.segments.length - 1; k >= 0; k--) {
      const s = this.segments[k]!
      if (s.source.id !== id || avoid?.has(s.name)) continue
      const i = findInSegment(s.seg, cid)
      if (i < 0) continue
      const e = segmentEntry(s.seg, i)
      // `avoid` names segments and packs a remote gc is about to delete: never depended on; a node
      // kept only as a delta base (its subtree may be gone) is no proof the remote has what it links
      if (avoid?.has(s.seg.packs[e.pack]!.hash) || (opts.subtree && (e.flags ?? 0) & ENTRY_FLAGS.baseOnly)) continue
      return s.name
    }
    return undefined
  }

  /** The names of the known segments of remote `id`, oldest first. */
  segmentNamesOf(id: string): string[] {
    return this.segments.filter((s) => s.source.id === id).map((s) => s.name)
  }

  /** A known segment, decoded (undefined when unknown). */
  segment(name: string): Segment | undefined {
    return this.segments.find((s) => s.name === name)?.seg
  }

  /** A known segment's deps (the segments its blocks reach into), or [] when unknown. */
  depsOf(name: string): string[] {
    return this.segments.find((s) => s.name === name)?.seg.deps ?? []
  }

  /** Where an entry of a remote pack (by hash) can be read here: a location in that pack (its hash must be known). */
  locationIn(hash: string, e: { offset: number; storedLength: number; rawLength: number; codec: number; depth?: number }): BlockLocation {
    const slot = this.slotOf.get(hash)
    if (slot === undefined) throw new CkptError('CKPT_BAD_INDEX', `remote pack ${hash} is in no known segment`)
    return { pack: REMOTE_PACK_BASE + slot, offset: e.offset, storedLength: e.storedLength, rawLength: e.rawLength, codec: e.codec, depth: e.depth ?? 0 }
  }

  isRemote(pack: number): boolean {
    return pack >= REMOTE_PACK_BASE && pack - REMOTE_PACK_BASE < this.packs.length
  }

  private pack(pack: number): CachedPack {
    const p = this.packs[pack - REMOTE_PACK_BASE]
    if (!p) throw new CkptError('CKPT_BAD_INDEX', `no remote pack ${pack}`)
    return p
  }

  size(pack: number): number {
    return this.pack(pack).size
  }

  /** The remote object, for messages. */
  describe(pack: number): string {
    const p = this.pack(pack)
    return `${p.source.url.replace(/\/$/, '')}/${packKey(p.hash)}`
  }

  /** The cache file of a remote pack (complete where a prefetch or read filled it); undefined when the cache is in memory. */
  filePath(pack: number): string | undefined {
    const p = this.open(this.pack(pack))
    return p.mem ? undefined : path.join(p.source.dir, 'cache', p.hash)
  }

  private open(p: CachedPack): CachedPack {
    if (p.fd >= 0 || p.mem) return p
    const file = path.join(p.source.dir, 'cache', p.hash)
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true })
      p.fd = fs.openSync(file, fs.existsSync(file) ? 'r+' : 'w+')
    } catch {
      // a read-only medium (or another user's store): this process keeps what it fetches in memory
      p.mem = new Map()
      return p
    }
    if (fs.fstatSync(p.fd).size !== p.size) {
      fs.ftruncateSync(p.fd, p.size)
      p.have.fill(0)
    } else {
      try {
        const list = fs.readFileSync(file + '.have')
        for (let o = 0; o + 4 <= list.length; o += 4) {
          const v = list.readUInt32LE(o)
          const x = v & 0x7fffffff
          if (x < p.have.length * 8) {
            if (v & 0x80000000) p.have[x >> 3]! &= ~(1 << (x & 7))
            else p.have[x >> 3]! |= 1 << (x & 7)
          }
        }
      } catch {}
    }
    p.haveFd = fs.openSync(file + '.have', 'a')
    return p
  }

  private present(p: CachedPack, x: number): boolean {
    return (p.have[x >> 3]! & (1 << (x & 7))) !== 0
  }

  private mark(p: CachedPack, first: number, last: number, on: boolean): void {
    const list = Buffer.alloc((last - first + 1) * 4)
    for (let x = first; x <= last; x++) {
      if (on) p.have[x >> 3]! |= 1 << (x & 7)
      else p.have[x >> 3]! &= ~(1 << (x & 7))
      list.writeUInt32LE(on ? x : (x | 0x80000000) >>> 0, (x - first) * 4)
    }
    if (p.haveFd >= 0) fs.writeSync(p.haveFd, list)
  }

  private store(source: RemoteSource): Promise<ObjectStore> {
    return (source.store ??= openObjectStore(source.url, { env: source.env }))
  }

  /** Extents [first, last] of a pack, fetched whole (one GET), written to the cache. */
  private fill(p: CachedPack, first: number, last: number, bytes: Uint8Array | undefined): void {
    const start = first * EXTENT
    const want = Math.min(p.size, (last + 1) * EXTENT) - start
    if (!bytes || bytes.length !== want) {
      throw new CkptError('CKPT_REMOTE_UNAVAILABLE', `the remote cannot give ${packKey(p.hash)} bytes ${start}–${start + want} (${bytes ? `${bytes.length} bytes came` : 'the object is missing'})`, {
        remote: p.source.url,
        key: packKey(p.hash),
        offset: start,
      })
    }
    if (p.mem) {
      for (let x = first; x <= last; x++) p.mem.set(x, bytes.slice((x - first) * EXTENT, (x - first + 1) * EXTENT))
      this.mark(p, first, last, true)
      return
    }
    try {
      fs.writeSync(p.fd, bytes, 0, bytes.length, start)
    } catch (err) {
      throw fsError(err, `cannot write the remote cache of ${p.hash}`, { path: path.join(p.source.dir, 'cache', p.hash) })
    }
    this.mark(p, first, last, true)
  }

  /** Bytes [offset, offset+length) of a remote pack: from the cache, fetching (synchronously) the extents it lacks. */
  read(pack: number, offset: number, length: number): Uint8Array {
    const p = this.open(this.pack(pack))
    if (offset + length > p.size) throw new CkptError('CKPT_BAD_INDEX', `a read past the end of remote pack ${p.hash}`, { offset, length })
    const first = Math.floor(offset / EXTENT)
    const last = Math.floor((offset + length - 1) / EXTENT)
    // a missing run is read with up to READ_AHEAD extents after it: the neighbours of a page (16
    // pages of 4 KiB and their headers span ~66 KiB) then come in the same GET
    const limit = Math.min(Math.ceil(p.size / EXTENT) - 1, last + READ_AHEAD)
    for (let x = first; x <= last; x++) {
      if (this.present(p, x)) continue
      let y = x
      while (y < limit && !this.present(p, y + 1)) y++
      const start = x * EXTENT
      const end = Math.min(p.size, (y + 1) * EXTENT)
      const reader = (p.source.reader ??= openSyncReader(p.source.url, { env: p.source.env }))
      this.fill(p, x, y, reader.read(packKey(p.hash), start, end - start))
      x = y
    }
    const out = Buffer.allocUnsafe(length)
    if (!p.mem) {
      fs.readSync(p.fd, out, 0, length, offset)
      return out
    }
    for (let x = first; x <= last; x++) {
      const ext = p.mem.get(x)!
      const from = Math.max(offset, x * EXTENT)
      const to = Math.min(offset + length, (x + 1) * EXTENT)
      out.set(ext.subarray(from - x * EXTENT, to - x * EXTENT), from - offset)
    }
    return out
  }

  /** Forgets the extents under a range (their bytes failed a check): the next read fetches them again. */
  invalidate(pack: number, offset: number, length: number): void {
    const p = this.open(this.pack(pack))
    this.mark(p, Math.floor(offset / EXTENT), Math.floor((offset + Math.max(1, length) - 1) / EXTENT), false)
  }

  /**
   * Fetches, ahead of reading them, the extents these locations touch that the cache lacks: runs of
   * missing extents become one GET each (up to 8 MiB), several in flight.
   */
  async prefetch(locs: readonly BlockLocation[], signal?: AbortSignal): Promise<void> {
    const want = new Map<number, Set<number>>()
    for (const l of locs) {
      if (!this.isRemote(l.pack)) continue
      const p = this.open(this.pack(l.pack))
      let set = want.get(l.pack)
      if (!set) want.set(l.pack, (set = new Set()))
      const end = l.offset + 52 + l.storedLength - 1
      for (let x = Math.floor(l.offset / EXTENT); x <= Math.floor(end / EXTENT); x++) if (!this.present(p, x)) set.add(x)
    }
    const runs: { p: CachedPack; first: number; last: number }[] = []
    for (const [pack, set] of want) {
      const p = this.pack(pack)
      const xs = [...set].sort((a, b) => a - b)
      for (let k = 0; k < xs.length; ) {
        let j = k
        while (j + 1 < xs.length && xs[j + 1]! <= xs[j]! + 2 && (xs[j + 1]! - xs[k]! + 1) * EXTENT <= MAX_RUN) j++
        runs.push({ p, first: xs[k]!, last: xs[j]! })
        k = j + 1
      }
    }
    let next = 0
    const worker = async () => {
      while (next < runs.length) {
        const r = runs[next++]!
        const store = await this.store(r.p.source)
        const start = r.first * EXTENT
        const end = Math.min(r.p.size, (r.last + 1) * EXTENT)
        this.fill(r.p, r.first, r.last, await store.get(packKey(r.p.hash), { offset: start, length: end - start, signal }))
      }
    }
    await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, runs.length) }, worker))
  }

  close(): void {
    for (const p of this.packs) {
      if (p.fd >= 0) fs.closeSync(p.fd)
      if (p.haveFd >= 0) fs.closeSync(p.haveFd)
      p.fd = p.haveFd = -1
      p.mem = undefined
    }
    for (const s of this.sources.values()) {
      s.reader?.close()
      s.reader = undefined
      void s.store?.then((o) => o.close(), () => {})
      s.store = undefined
    }
  }
}
