/**
 * Reading a pack file front to back, as verify and `repair --rebuild-index` do: the header, every
 * entry (its CID, lengths, codec and checksum over header and payload), the footer of a sealed pack.
 * Entries are self-describing, so a scan needs nothing but the file. After a damaged entry the scan
 * looks for the next entry whose checksum holds (a 4-byte CRC over header and payload: a false match
 * on garbage is a 2^-32 event at a position that also passes the header checks).
 */
import fs from 'node:fs'
import { preadUpTo } from '../codecs/bytes.js'
import { crc32 } from 'node:zlib'
import { CID_LENGTH } from '../codecs/cid.js'
import { MAX_AT_REST, storedAsDelta } from '../codecs/compress.js'
import { decodeFooter, ENTRY_HEADER_SIZE, ENTRY_KIND, type EntryHeader, FOOTER_SIZE, isFault, MAX_BLOCK_SIZE, MAX_ENTRY_KIND, openPayload, PACK_HEADER_SIZE, PACK_MAGIC, PACK_VERSIONS, SEAL_MAGIC } from '../codecs/pack-format.js'

/** An intact entry found by a scan: its header's fields (kind: ENTRY_KIND) and where it is. */
export interface ScannedEntry extends Omit<EntryHeader, 'crc'> {
  offset: number
  /** the CID (header), the payload and the whole entry (header and payload): views, valid until the next event (copy what you keep) */
  payload: Uint8Array
  bytes: Uint8Array
  /** set by a scan elsewhere that proved the content (CompactScan.proven): it hashes to the CID */
  proven?: boolean
  /** what scanPack's `check` said of the entry (its checksum was then checked, or waived); undefined: not asked */
  wanted?: boolean
  /** the buffer the entry lies in (from `at`, header first), valid as the views are: to read it without making views */
  buf?: Uint8Array
  at?: number
}

export type ScanEvent =
  | { kind: 'entry'; entry: ScannedEntry }
  /** bytes [offset, offset + length) hold no valid entry (damage); the scan resumed after them */
  | { kind: 'damage'; offset: number; length: number; reason: string }
  | { kind: 'bad-header'; reason: string }
  /** the pack's format version (1 or 2), once its header was read */
  | { kind: 'header'; version: number }
  | { kind: 'footer'; entryCount: number; dataEnd: number }
  | { kind: 'bad-footer'; reason: string }
  /** where the entries end: the committed length (or the footer's data end), or the file's end */
  | { kind: 'end'; offset: number; fileSize: number }

const WINDOW = 4 << 20

/**
 * Whether the 52 bytes at b[o] look like an entry header (lengths, codec, kind, a ckpt CID prefix);
 * `maxKind` is 0 in version-1 packs, which have no entry kinds.
 */
function plausible(b: Buffer, o: number, maxKind: number): boolean {
  const c = o + 12
  if (b[c] !== 0x01 || (b[c + 1] !== 0x55 && b[c + 1] !== 0x71) || b[c + 2] !== 0x1e || b[c + 3] !== 0x20) return false
  return b.readUInt32LE(o) <= MAX_BLOCK_SIZE && b.readUInt32LE(o + 4) <= MAX_BLOCK_SIZE && b[o + 10]! <= maxKind && b[o + 11] === 0 && b[o + 8]! <= MAX_AT_REST
}

/** CRC-32 (zlib's) byte by byte, for short spans: no view to make, no call into C++ */
const CRC_TABLE = (() => {
  const t = new Int32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
    t[n] = c
  }
  return t
})()

function crcBytes(b: Uint8Array, from: number, to: number, crc: number): number {
  let c = ~crc
  for (let i = from; i < to; i++) c = CRC_TABLE[(c ^ b[i]!) & 255]! ^ (c >>> 8)
  return ~c >>> 0
}

/** payloads up to this length are summed in JS (faster than a view and a call for short ones) */
const SHORT_CRC = 128

function crcOk(b: Buffer, at: number, stored: number): boolean {
  const c = crcBytes(b, at, at + 48, 0)
  const from = at + ENTRY_HEADER_SIZE
  const sum = stored <= SHORT_CRC ? crcBytes(b, from, from + stored, c) : crc32(b.subarray(from, from + stored), c)
  return (sum >>> 0) === b.readUInt32LE(at + 48)
}

/** Reads up to into.length bytes at pos; returns how many there were. */
export type PackReader = { size: number; read(into: Uint8Array, pos: number): number; close?(): void }

/** A pack file as a PackReader. */
export function fileReader(file: string): PackReader {
  const fd = fs.openSync(file, 'r')
  return { size: fs.fstatSync(fd).size, read: (into, pos) => preadUpTo(fd, into, pos), close: () => fs.closeSync(fd) }
}

export function scanPackFile(file: string, packNo: number, opts: { end?: number; sealed?: boolean } = {}): Generator<ScanEvent> {
  return scanPack(fileReader(file), packNo, opts)
}

/**
 * Scans a pack (number packNo). `end`: where entries stop (an unsealed pack's committed length);
 * undefined: a sealed pack's footer says, else the file's end. Closes the reader when done.
 */
export function* scanPack(
  r: PackReader,
  packNo: number,
  opts: {
    end?: number
    /** where the entries to look at begin (default: right after the pack header) */
    start?: number
    /**
     * with `start`: the first entry is searched for from there (one part of a pack scanned in parts,
     * joinScans): the bytes before it are not reported as damage
     */
    seek?: boolean
    /**
     * one part of a pack scanned in parts: no entry starting at or after this offset is read, and the
     * file's end is not judged (the last part does that); `end` then says where the scan stopped
     */
    stopAfter?: number
    sealed?: boolean
    footerOptional?: boolean
    /**
     * whether an entry's checksum matters (default: every entry's does), given the buffer its CID is
     * in and where, its kind and its offset in the pack; the entry's `wanted` says what it answered. gc checks only the entries it copies;
     * one it skips is walked over by its header (a damaged length still shows: the next header is
     * then implausible, and the scan falls back to searching with checksums)
     */
    check?: (buf: Uint8Array, cidAt: number, kind: number, offset: number) => boolean
    /**
     * the read window's memory, the caller's to reuse from one scan to the next (gc's copies: a fresh
     * 4 MiB buffer per pack left holes in the C heap); entries' views into it last until the next event
     */
    window?: { buf: Buffer }
  } = {},
): Generator<ScanEvent> {
  try {
    const size = r.size
    const maxKind = yield* headerEvents(r, packNo)
    const end = yield* entriesEnd(r, opts)
    const limit = Math.min(end, size)
    const win = new EntryWindow(r, limit, maxKind, opts.check, opts.window)
    let at = Math.max(PACK_HEADER_SIZE, opts.start ?? PACK_HEADER_SIZE)
    if (opts.seek) {
      while (at + ENTRY_HEADER_SIZE <= limit && !(win.startsCid(at) && win.entryAt(at))) at++
      if (at + ENTRY_HEADER_SIZE > limit) at = Math.max(at, limit)
    }
    const until = Math.min(limit, opts.stopAfter ?? limit)
    while (at < until) {
      const e = win.entryAt(at, true)
      if (e) {
        yield { kind: 'entry', entry: e }
        at += ENTRY_HEADER_SIZE + e.storedLength
        continue
      }
      // damage: the next position where a whole, checksummed entry starts
      let next = -1
      for (let p = at + 1; p + ENTRY_HEADER_SIZE <= limit; p++) {
        if (win.startsCid(p) && win.entryAt(p)) {
          next = p
          break
        }
      }
      const stop = next < 0 ? limit : next
      yield { kind: 'damage', offset: at, length: stop - at, reason: 'no valid entry' }
      at = stop
    }
    if (opts.stopAfter !== undefined) {
      yield { kind: 'end', offset: at, fileSize: size }
      return
    }
    if (size < end) yield { kind: 'damage', offset: size, length: end - size, reason: `the file ends at ${size}, ${end - size} bytes before its committed length` }
    yield { kind: 'end', offset: limit, fileSize: size }
  } finally {
    r.close?.()
  }
}

/** The pack header's events; returns the highest entry kind its version allows. */
function* headerEvents(r: PackReader, packNo: number): Generator<ScanEvent, number> {
  const head = Buffer.alloc(PACK_HEADER_SIZE)
  const got = r.read(head, 0)
  // a damaged header: entries are still looked for, as in the newest format (kinds allowed)
  if (got < PACK_HEADER_SIZE || !head.subarray(0, 8).equals(PACK_MAGIC)) {
    yield { kind: 'bad-header', reason: got < PACK_HEADER_SIZE ? `the file has ${r.size} bytes, less than a pack header` : 'bad magic' }
  } else if (!PACK_VERSIONS.includes(head.readUInt16LE(8))) {
    yield { kind: 'bad-header', reason: `pack format version ${head.readUInt16LE(8)}` }
  } else if (head.readUInt32LE(12) !== packNo) {
    yield { kind: 'bad-header', reason: `the header says pack ${head.readUInt32LE(12)}` }
  } else {
    const version = head.readUInt16LE(8)
    yield { kind: 'header', version }
    if (version === 1) return 0
  }
  return MAX_ENTRY_KIND
}

/** Where the entries end: the footer's data end when the pack is sealed (its events), else `end` or the file's end. */
function* entriesEnd(r: PackReader, opts: { end?: number; sealed?: boolean; footerOptional?: boolean }): Generator<ScanEvent, number> {
  const size = r.size
  let end = opts.end ?? size
  if (opts.footerOptional && size >= PACK_HEADER_SIZE + FOOTER_SIZE) {
    // a retired pack: it may or may not have been sealed before its damage
    const foot = Buffer.alloc(FOOTER_SIZE)
    const f = r.read(foot, size - FOOTER_SIZE) === FOOTER_SIZE ? decodeFooter(foot) : undefined
    if (f && f.dataEnd === size - FOOTER_SIZE) end = f.dataEnd
  }
  if (opts.sealed) {
    const foot = Buffer.alloc(FOOTER_SIZE)
    const n = size >= FOOTER_SIZE ? r.read(foot, size - FOOTER_SIZE) : 0
    const f = n === FOOTER_SIZE ? decodeFooter(foot) : undefined
    if (!f || !foot.subarray(0, 8).equals(SEAL_MAGIC) || f.dataEnd !== size - FOOTER_SIZE) {
      yield { kind: 'bad-footer', reason: f ? `the footer's data end ${f.dataEnd} is not the file's end` : 'no sealed-pack footer at the end of the file' }
      end = Math.min(end, size)
    } else {
      yield { kind: 'footer', entryCount: f.entryCount, dataEnd: f.dataEnd }
      end = f.dataEnd
    }
  }
  return end
}

/** A read window over a pack, and the entries that start in it. */
class EntryWindow {
  private buf: Buffer
  /** file offset of buf[0] */
  private bufAt = 0
  private bufLen = 0

  constructor(
    private readonly r: PackReader,
    private readonly limit: number,
    private readonly maxKind: number,
    private readonly check: ((buf: Uint8Array, cidAt: number, kind: number, offset: number) => boolean) | undefined,
    private readonly shared?: { buf: Buffer },
  ) {
    this.buf = shared ? (shared.buf.length >= WINDOW ? shared.buf : (shared.buf = Buffer.allocUnsafe(WINDOW))) : Buffer.allocUnsafe(WINDOW)
  }

  private have(from: number, n: number): boolean {
    if (from >= this.bufAt && from + n <= this.bufAt + this.bufLen) return true
    if (from + n > this.limit) return false
    if (n > this.buf.length) {
      this.buf = Buffer.allocUnsafe(n + WINDOW)
      if (this.shared) this.shared.buf = this.buf
    }
    this.bufAt = from
    this.bufLen = 0
    const want = Math.min(this.buf.length, this.limit - from)
    this.bufLen = this.r.read(this.buf.subarray(0, want), from)
    return this.bufLen >= n
  }

  /** Whether a header at p could begin with a CID (its first byte, 0x01): the cheap test of a resync. */
  startsCid(p: number): boolean {
    return this.have(p, ENTRY_HEADER_SIZE) && this.buf[p - this.bufAt + 12] === 0x01
  }

  /** The whole entry at file offset p, if one starts there and its checksum holds (`mayTrust`: the check option may waive it). */
  entryAt(p: number, mayTrust = false): ScannedEntry | undefined {
    if (!this.have(p, ENTRY_HEADER_SIZE) || !plausible(this.buf, p - this.bufAt, this.maxKind)) return undefined
    const stored = this.buf.readUInt32LE(p - this.bufAt)
    if (p + ENTRY_HEADER_SIZE + stored > this.limit || !this.have(p, ENTRY_HEADER_SIZE + stored)) return undefined
    const b = this.buf
    const o = p - this.bufAt
    const wanted = mayTrust && this.check !== undefined ? this.check(b, o + 12, b[o + 10]!, p) : undefined
    if (wanted !== false && !crcOk(b, o, stored)) return undefined
    return new WindowEntry(b, o, p, stored, wanted)
  }
}

/** An entry in a scan's window: its views are made when first asked for (gc reads most entries by `buf` and `at`). */
class WindowEntry implements ScannedEntry {
  readonly rawLength: number
  readonly codec: number
  readonly depth: number
  readonly kind: number
  private cidView: Uint8Array | undefined
  private payloadView: Uint8Array | undefined
  private bytesView: Uint8Array | undefined

  constructor(
    readonly buf: Buffer,
    readonly at: number,
    readonly offset: number,
    readonly storedLength: number,
    readonly wanted: boolean | undefined,
  ) {
    this.rawLength = buf.readUInt32LE(at + 4)
    this.codec = buf[at + 8]!
    this.depth = buf[at + 9]!
    this.kind = buf[at + 10]!
  }

  get cid(): Uint8Array {
    return (this.cidView ??= this.buf.subarray(this.at + 12, this.at + 12 + CID_LENGTH))
  }

  get payload(): Uint8Array {
    return (this.payloadView ??= this.buf.subarray(this.at + ENTRY_HEADER_SIZE, this.at + ENTRY_HEADER_SIZE + this.storedLength))
  }

  get bytes(): Uint8Array {
    return (this.bytesView ??= this.buf.subarray(this.at, this.at + ENTRY_HEADER_SIZE + this.storedLength))
  }
}

/**
 * A scan's events in a form that crosses threads cheaply (verify scans packs on worker threads): the
 * entries as columns, the payloads of the entries that are not raw chunks (tree nodes, manifests,
 * catalog records: what the later phases read) concatenated, and the other events with the number of
 * entries before each.
 */
export interface CompactScan {
  count: number
  offsets: Float64Array
  stored: Uint32Array
  raw: Uint32Array
  codec: Uint8Array
  depth: Uint8Array
  kind: Uint8Array
  /** CID_LENGTH bytes per entry */
  cids: Uint8Array
  /** where each entry's payload starts in `kept`, or -1 (a raw chunk: not kept) */
  keptAt: Float64Array
  kept: Uint8Array
  others: { at: number; event: Exclude<ScanEvent, { kind: 'entry' }> }[]
  /**
   * with `prove`: 1 where the entry's content was decompressed and hashes to its CID (blocks stored
   * whole; node deltas and catalog records are not proven here), else 0
   */
  proven?: Uint8Array
  /** where the first entry starts (where the scan ended, when it found none) */
  from: number
  /** where the scan ended: after its last entry (a part, `stopAfter`), or the entries' end */
  to: number
}

/** Scans a pack file (as scanPack) into a CompactScan. */
export function scanPackCompact(
  file: string,
  packNo: number,
  opts: { end?: number; sealed?: boolean; footerOptional?: boolean; prove?: boolean; start?: number; seek?: boolean; stopAfter?: number } = {},
): CompactScan {
  let cap = 1024
  let cols = columns(cap)
  let n = 0
  let kept: Uint8Array = new Uint8Array(1 << 20)
  let keptLen = 0
  const scratch = new Map<number, Uint8Array>()
  const others: CompactScan['others'] = []
  for (const ev of scanPack(fileReader(file), packNo, opts)) {
    if (ev.kind !== 'entry') {
      others.push({ at: n, event: ev })
      continue
    }
    const e = ev.entry
    if (n === cap) cols = columns((cap *= 2), cols)
    cols.offsets[n] = e.offset
    cols.stored[n] = e.storedLength
    cols.raw[n] = e.rawLength
    cols.codec[n] = e.codec
    cols.depth[n] = e.depth
    cols.kind[n] = e.kind
    cols.cids.set(e.cid, n * CID_LENGTH)
    cols.keptAt[n] = -1
    if (e.cid[1] !== 0x55) {
      if (keptLen + e.payload.length > kept.length) kept = grown(kept, Math.max(kept.length * 2, keptLen + e.payload.length))
      kept.set(e.payload, keptLen)
      cols.keptAt[n] = keptLen
      keptLen += e.payload.length
    }
    if (opts.prove && e.kind !== ENTRY_KIND.record && !storedAsDelta(e.codec)) cols.proven[n] = prove(e, scratch) ? 1 : 0
    n++
  }
  const c = columns(n, cols)
  const end = others.find((o) => o.event.kind === 'end')?.event as { offset: number } | undefined
  const to = end?.offset ?? 0
  return { count: n, ...c, kept: kept.subarray(0, keptLen), others, proven: opts.prove ? c.proven : undefined, from: n > 0 ? c.offsets[0]! : to, to }
}

/** Whether an entry's payload opens to bytes that hash to its CID (scratch: a buffer per raw length). */
function prove(e: ScannedEntry, scratch: Map<number, Uint8Array>): boolean {
  let into = scratch.get(e.rawLength)
  if (!into && scratch.size < 8) scratch.set(e.rawLength, (into = new Uint8Array(e.rawLength)))
  return !isFault(openPayload(e.codec, e.payload, e.rawLength, e.cid, 4, into))
}

/** The per-entry columns of a CompactScan, plus the proven flags, while a scan fills them. */
type Columns = Pick<CompactScan, 'offsets' | 'stored' | 'raw' | 'codec' | 'depth' | 'kind' | 'cids' | 'keptAt'> & { proven: Uint8Array }

/** The entry columns for `cap` entries, holding the first entries of `from` (cut or grown to fit). */
function columns(cap: number, from?: Columns): Columns {
  const cols: Columns = {
    offsets: new Float64Array(cap),
    stored: new Uint32Array(cap),
    raw: new Uint32Array(cap),
    codec: new Uint8Array(cap),
    depth: new Uint8Array(cap),
    kind: new Uint8Array(cap),
    cids: new Uint8Array(cap * CID_LENGTH),
    keptAt: new Float64Array(cap),
    proven: new Uint8Array(cap),
  }
  if (from) for (const k of Object.keys(cols) as (keyof Columns)[]) cols[k].set(from[k].subarray(0, cols[k].length) as never)
  return cols
}

function grown(a: Uint8Array, size: number): Uint8Array {
  const b = new Uint8Array(size)
  b.set(a)
  return b
}

/**
 * The events of a CompactScan, as scanPack would have yielded them. Entries that are raw chunks carry
 * an empty payload and `bytes` (their bytes stayed in the scanning thread).
 */
export function* compactEvents(c: CompactScan): Generator<ScanEvent> {
  const empty = new Uint8Array(0)
  let o = 0
  for (let i = 0; i <= c.count; i++) {
    while (o < c.others.length && c.others[o]!.at === i) yield c.others[o++]!.event
    if (i === c.count) break
    const at = c.keptAt[i]!
    const payload = at < 0 ? empty : c.kept.subarray(at, at + c.stored[i]!)
    yield {
      kind: 'entry',
      entry: {
        offset: c.offsets[i]!,
        storedLength: c.stored[i]!,
        rawLength: c.raw[i]!,
        codec: c.codec[i]!,
        depth: c.depth[i]!,
        kind: c.kind[i]!,
        cid: c.cids.subarray(i * CID_LENGTH, (i + 1) * CID_LENGTH),
        payload,
        bytes: empty,
        proven: c.proven?.[i] === 1,
      },
    }
  }
}

/** The parts of a pack scanned apart, for splitting one large pack between threads (verify): `parts` of them. */
export function splitPack(start: number, end: number, parts: number): { start?: number; seek?: boolean; stopAfter?: number }[] {
  const at = (k: number) => start + Math.floor(((end - start) * k) / parts)
  return Array.from({ length: parts }, (_, k) => ({
    ...(k > 0 ? { start: at(k), seek: true } : {}),
    ...(k < parts - 1 ? { stopAfter: at(k + 1) } : {}),
  }))
}

/**
 * The scans of a pack's parts (splitPack's, in order) as the one scan of the whole pack, or undefined
 * when they do not join up: damage in a part (its resynchronising depends on where the scan began),
 * or a part whose first entry is not where the previous part's last one ended (the entry it found by
 * seeking was a false match, or a gap): the caller then scans the pack whole. Where they join, every
 * entry is one the whole scan reads (each part's first entry is the previous one's successor).
 */
export function joinScans(parts: CompactScan[]): CompactScan | undefined {
  for (let k = 0; k < parts.length; k++) {
    if (parts[k]!.others.some((o) => o.event.kind === 'damage')) return undefined
    if (k > 0 && parts[k]!.from !== parts[k - 1]!.to) return undefined
  }
  const count = parts.reduce((n, p) => n + p.count, 0)
  const cols = columns(count)
  const kept = new Uint8Array(parts.reduce((n, p) => n + p.kept.length, 0))
  const others: CompactScan['others'] = []
  let n = 0
  let keptLen = 0
  parts.forEach((p, k) => {
    for (const key of Object.keys(cols) as (keyof Columns)[]) {
      if (key === 'proven') {
        if (p.proven) cols.proven.set(p.proven, n)
        continue
      }
      const per = key === 'cids' ? CID_LENGTH : 1
      cols[key].set(p[key].subarray(0, p.count * per) as never, n * per)
    }
    for (let i = 0; i < p.count; i++) if (p.keptAt[i]! >= 0) cols.keptAt[n + i] = p.keptAt[i]! + keptLen
    kept.set(p.kept, keptLen)
    keptLen += p.kept.length
    // the header's and footer's events once (every part read them), the end from the last part
    for (const o of p.others) {
      const ev = o.event
      if (ev.kind === 'end' ? k === parts.length - 1 : k === 0) others.push({ at: o.at + n, event: ev })
    }
    n += p.count
  })
  return { count, ...cols, kept, others, proven: parts[0]!.proven ? cols.proven : undefined, from: parts[0]!.from, to: parts[parts.length - 1]!.to }
}
