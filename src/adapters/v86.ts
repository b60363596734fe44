/**
 * v86 adapter: checkpoints of a v86 emulator (https://github.com/copy/v86, state format version 6 as
 * written by v86 0.5.462) in a ckpt timeline, and byte-identical states back.
 *
 * A v86 state is `header(16) | info JSON | pad | buffers`, the buffers being the typed arrays the JSON
 * refers to by `buffer_id`; guest RAM is one of them, packed (the non-zero 4 KiB pages, in order) with
 * a page bitmap next to it. The adapter stores (adapter format 1, see SPEC.md, "The v86 adapter"):
 *
 * - region `ram`: guest RAM unpacked at each page's guest address (absent pages are holes);
 * - regions `vram`, `vga-planes`, `vga-pixels` (when the timeline has them, of the buffers' sizes):
 *   the VGA device's SVGA memory, legacy planes and pixel buffer; `fda`, `fdb`, `hda`, `hdb`, `cdrom`:
 *   disk images given to v86 as buffers (v86 puts their whole contents in every state);
 * - blob `v86`: a small JSON descriptor (format, length, which buffers went where);
 * - blob `v86.head`: the state's first bytes verbatim: v86's 16-byte header, the info JSON, its padding;
 * - blob `v86.bufs`: every other buffer (the RAM bitmap included), concatenated in buffer-id order;
 * - blob `v86.clock` (optional): the deterministic driver's clock state (v86-clock.ts), for replay.
 *
 * This module does not import v86: an emulator is anything with save_state() / restore_state().
 */
import { CkptError } from '../../codecs/errors.js'
import type { CkptStore } from '../store.js'
import type { Checkpoint, CheckpointInput, RegionConfig, RegionInput, Timeline } from '../timeline.js'
import type { JumpResult } from '../travel.js'
import type { CID } from 'multiformats/cid'
import { Aside, refreshChunks } from './shadow.js'
import { parseV86Clock, restoreV86Emulator, type V86Clock, type V86ClockState } from './v86-clock.js'

export { v86Clock, parseV86Clock, restoreV86Emulator, type V86Clock, type V86ClockState } from './v86-clock.js'

/** What the adapter needs of a v86 emulator (the `V86` class of the `v86` package fits). */
export interface V86Emulator {
  save_state(): Promise<ArrayBuffer>
  restore_state(state: ArrayBuffer): Promise<void> | void
}

export const V86_STATE_MAGIC = 0x86768676
export const V86_STATE_VERSION = 6
export const V86_ZSTD_MAGIC = 0xfd2fb528
/** version of the adapter's own mapping (the `v86` descriptor blob's `format`) */
export const V86_FORMAT = 1
export const V86_PAGE = 4096

const HEADER = 16
/** state[0]: memory size in bytes; state[77]: packed non-zero pages; state[78]: page bitmap */
const MEM_SIZE = 0
const MEM_PACKED = 77
const MEM_BITMAP = 78
/**
 * Buffers mapped onto regions, by their path in the state tree: the VGA device's memories (state[52])
 * and disk images held in memory (a SyncBuffer serialises as [byteLength, Uint8Array]): floppies in the
 * FDC (state[55]), IDE drives in the IDE controller (state[85]: channel, drive, interface[28]).
 */
export const V86_PAGE_BUFFERS: readonly { region: string; path: readonly number[]; chunkSize: number }[] = [
  { region: 'vram', path: [52, 39], chunkSize: 4096 }, // svga_memory (vga_memory_size bytes)
  { region: 'vga-planes', path: [52, 6], chunkSize: 4096 }, // vga_memory: legacy planes (text mode lives here)
  { region: 'vga-pixels', path: [52, 61], chunkSize: 4096 }, // pixel_buffer
  { region: 'fda', path: [55, 44, 10, 1], chunkSize: 4096 },
  { region: 'fdb', path: [55, 45, 10, 1], chunkSize: 4096 },
  { region: 'hda', path: [85, 0, 0, 28, 1], chunkSize: 65536 },
  { region: 'hdb', path: [85, 0, 1, 28, 1], chunkSize: 65536 },
  { region: 'cdrom', path: [85, 1, 0, 28, 1], chunkSize: 65536 },
]
/** blob names */
export const V86_BLOBS = { descriptor: 'v86', head: 'v86.head', bufs: 'v86.bufs', clock: 'v86.clock' } as const
const RAM = 'ram'

/** The `v86` descriptor blob (UTF-8 JSON, keys in this order). */
export interface V86Descriptor {
  format: number
  /** byte length of the whole state */
  length: number
  /** byte length of blob v86.head: header, info JSON and padding up to the buffer block */
  head: number
  /** the RAM mapping: region name, buffer id of the packed pages, buffer id of the bitmap */
  ram: { region: string; buffer: number; bitmap: number }
  /** page regions: region name -> buffer id (the region holds the buffer's bytes) */
  regions: Record<string, number>
}

/** The parts of a state: what a checkpoint stores (regions at full size, blobs). */
export interface V86Parts {
  regions: Readonly<Record<string, Uint8Array>>
  blobs: Readonly<Record<string, Uint8Array>>
}

function bad(message: string, details: Record<string, unknown> = {}): CkptError {
  return new CkptError('CKPT_BAD_STATE', message, details)
}

const utf8 = new TextDecoder('utf-8', { fatal: true })
const align4 = (n: number) => (n + 3) & ~3

interface BufferRef {
  __state_type__: string
  buffer_id: number
}

function isBufferRef(v: unknown): v is BufferRef {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && typeof (v as BufferRef).buffer_id === 'number' && typeof (v as BufferRef).__state_type__ === 'string'
}

function at(tree: unknown, path: readonly number[]): unknown {
  let node = tree
  for (const i of path) {
    if (!Array.isArray(node)) return undefined
    node = node[i]
  }
  return node
}

/** A parsed state: views into the caller's bytes. */
interface Parsed {
  bytes: Uint8Array
  /** start of the buffer block (= v86.head's length) */
  block: number
  /** absolute [start, end) of every buffer */
  starts: number[]
  lengths: number[]
  memSize: number
  packed: number
  bitmap: number
  /** page regions found in the state: name -> buffer id */
  pageBuffers: Map<string, number>
}

/** Header fields and the info JSON of a state or of a v86.head blob (which holds the same first bytes). */
function parseHead(u8: Uint8Array, total: number | undefined): { infoLen: number; block: number; info: { buffer_infos: unknown; state: unknown } } {
  if (u8.length < HEADER) throw bad(`a v86 state has at least ${HEADER} bytes, this one ${u8.length}`, { length: u8.length })
  const dv = new DataView(u8.buffer, u8.byteOffset, u8.byteLength)
  const magic = dv.getUint32(0, true)
  if (magic === V86_ZSTD_MAGIC) throw bad('a zstd-compressed v86 state: decompress it first (save_state() returns the raw layout)')
  if (magic !== V86_STATE_MAGIC) throw bad(`not a v86 state (magic 0x${magic.toString(16).padStart(8, '0')})`, { magic })
  const version = dv.getInt32(4, true)
  if (version !== V86_STATE_VERSION) throw bad(`v86 state version ${version}; this adapter reads version ${V86_STATE_VERSION}`, { version })
  const declared = dv.getInt32(8, true)
  if (total !== undefined && declared !== total) throw bad(`the v86 state header says ${declared} bytes, the state has ${total} (truncated?)`, { declared, length: total })
  const infoLen = dv.getInt32(12, true)
  const block = align4(HEADER + infoLen)
  if (infoLen < 0 || block > u8.length) throw bad(`v86 state info block of ${infoLen} bytes does not fit`, { infoLen })
  let info: { buffer_infos: unknown; state: unknown }
  try {
    info = JSON.parse(utf8.decode(u8.subarray(HEADER, HEADER + infoLen)))
  } catch (err) {
    throw new CkptError('CKPT_BAD_STATE', 'the v86 state info block is not UTF-8 JSON', {}, err)
  }
  if (typeof info !== 'object' || info === null || !Array.isArray(info.buffer_infos) || !Array.isArray(info.state)) {
    throw bad('the v86 state info block lacks buffer_infos or state')
  }
  for (let i = HEADER + infoLen; i < block; i++) if (u8[i] !== 0) throw bad('non-zero padding after the info block', { offset: i })
  return { infoLen, block, info }
}

/** Buffer positions from buffer_infos, checked: in bounds, in order, not overlapping. */
function bufferLayout(infos: unknown[], block: number, total: number): { starts: number[]; lengths: number[] } {
  const starts: number[] = []
  const lengths: number[] = []
  let end = block
  for (let i = 0; i < infos.length; i++) {
    const bi = infos[i] as { offset?: unknown; length?: unknown }
    const o = bi?.offset
    const n = bi?.length
    if (!Number.isSafeInteger(o) || !Number.isSafeInteger(n) || (o as number) < 0 || (n as number) < 0) throw bad(`buffer ${i}: bad offset or length`, { buffer: i })
    const s = block + (o as number)
    if (s < end || s + (n as number) > total) throw bad(`buffer ${i} overlaps another or lies outside the state`, { buffer: i, offset: o, length: n })
    starts.push(s)
    lengths.push(n as number)
    end = s + (n as number)
  }
  return { starts, lengths }
}

function parseState(input: ArrayBuffer | Uint8Array): Parsed {
  if (!(input instanceof Uint8Array) && !(input instanceof ArrayBuffer)) throw new TypeError('a v86 state is an ArrayBuffer or a Uint8Array')
  const u8 = input instanceof Uint8Array ? input : new Uint8Array(input)
  const { block, info } = parseHead(u8, u8.length)
  const { starts, lengths } = bufferLayout(info.buffer_infos as unknown[], block, u8.length)
  // every byte outside the head and the buffers is zero padding, so a join can write zeros there
  let pos = block
  for (let i = 0; i <= starts.length; i++) {
    const next = i < starts.length ? starts[i]! : u8.length
    for (let k = pos; k < next; k++) if (u8[k] !== 0) throw bad('non-zero padding between buffers', { offset: k })
    if (i < starts.length) pos = starts[i]! + lengths[i]!
  }
  const state = info.state as unknown[]
  const memSize = state[MEM_SIZE]
  const packedRef = state[MEM_PACKED]
  const bitmapRef = state[MEM_BITMAP]
  if (!Number.isSafeInteger(memSize) || (memSize as number) <= 0) throw bad('the v86 state has no memory size (state[0])')
  if (!isBufferRef(packedRef) || !isBufferRef(bitmapRef)) throw bad('the v86 state has no packed memory and page bitmap (state[77], state[78])')
  const ids = new Set<number>()
  const checkId = (id: number, what: string) => {
    if (!Number.isInteger(id) || id < 0 || id >= starts.length) throw bad(`${what} names buffer ${id}, which does not exist`, { buffer: id })
    if (ids.has(id)) throw bad(`buffer ${id} is named twice`, { buffer: id })
    ids.add(id)
  }
  checkId(packedRef.buffer_id, 'the packed memory')
  checkId(bitmapRef.buffer_id, 'the page bitmap')
  const packed = packedRef.buffer_id
  const bitmap = bitmapRef.buffer_id
  const pages = Math.floor((memSize as number) / V86_PAGE)
  const bm = u8.subarray(starts[bitmap]!, starts[bitmap]! + lengths[bitmap]!)
  let present = 0
  for (let i = 0; i < bm.length; i++) {
    const b = bm[i]!
    if (b === 0) continue
    for (let k = 0; k < 8; k++) {
      if (!(b & (1 << k))) continue
      if (i * 8 + k >= pages) throw bad(`the page bitmap marks page ${i * 8 + k}, past the memory's ${pages} pages`, { page: i * 8 + k })
      present++
    }
  }
  if (lengths[packed] !== present * V86_PAGE) {
    throw bad(`packed memory has ${lengths[packed]} bytes, the bitmap marks ${present} pages (${present * V86_PAGE} bytes)`, { packed: lengths[packed], pages: present })
  }
  const pageBuffers = new Map<string, number>()
  for (const { region, path } of V86_PAGE_BUFFERS) {
    const ref = at(state, path)
    if (!isBufferRef(ref) || ref.buffer_id < 0 || ref.buffer_id >= starts.length || ids.has(ref.buffer_id) || lengths[ref.buffer_id] === 0) continue
    ids.add(ref.buffer_id)
    pageBuffers.set(region, ref.buffer_id)
  }
  return { bytes: u8, block, starts, lengths, memSize: memSize as number, packed, bitmap, pageBuffers }
}

const buf = (u8: Uint8Array) => Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength)

function descriptorBytes(p: Parsed, regions: Map<string, number>): Uint8Array {
  const d: V86Descriptor = {
    format: V86_FORMAT,
    length: p.bytes.length,
    head: p.block,
    ram: { region: RAM, buffer: p.packed, bitmap: p.bitmap },
    regions: Object.fromEntries(regions),
  }
  return new TextEncoder().encode(JSON.stringify(d))
}

/** The buffers that are neither RAM nor mapped onto a region, concatenated in id order. */
function bufsBlob(p: Parsed, regions: Map<string, number>): Uint8Array {
  const mapped = new Set<number>([p.packed, ...regions.values()])
  let n = 0
  for (let i = 0; i < p.starts.length; i++) if (!mapped.has(i)) n += p.lengths[i]!
  const out = new Uint8Array(n)
  let w = 0
  for (let i = 0; i < p.starts.length; i++) {
    if (mapped.has(i)) continue
    out.set(p.bytes.subarray(p.starts[i]!, p.starts[i]! + p.lengths[i]!), w)
    w += p.lengths[i]!
  }
  return out
}

/** Calls fn(page, k) for every page present in the bitmap, k counting them from 0. */
function forPresent(bm: Uint8Array, fn: (page: number, k: number) => void): void {
  let k = 0
  for (let i = 0; i < bm.length; i++) {
    const b = bm[i]!
    if (b === 0) continue
    for (let j = 0; j < 8; j++) if (b & (1 << j)) fn(i * 8 + j, k++)
  }
}

/**
 * The region configs a timeline needs for states like this one: `ram` (the guest's memory size, 4 KiB
 * pages), the VGA memories (4 KiB) and the disk images the state holds (floppies 4 KiB, IDE 64 KiB).
 */
export function v86Regions(state: ArrayBuffer | Uint8Array): Record<string, RegionConfig> {
  const p = parseState(state)
  const out: Record<string, RegionConfig> = { [RAM]: { size: p.memSize, chunkSize: V86_PAGE } }
  for (const { region, chunkSize } of V86_PAGE_BUFFERS) {
    const id = p.pageBuffers.get(region)
    if (id !== undefined) out[region] = { size: p.lengths[id]!, chunkSize }
  }
  return out
}

/**
 * Splits a state into the regions and blobs a checkpoint stores. `regions.ram` is a new buffer of the
 * guest's memory size; the page regions are views of the input. Throws CKPT_BAD_STATE for anything
 * that is not a well-formed uncompressed v86 version-6 state.
 */
export function splitV86State(state: ArrayBuffer | Uint8Array, opts: { regions?: readonly string[] } = {}): V86Parts {
  const p = parseState(state)
  const want = opts.regions ? new Set(opts.regions) : undefined
  const mapped = new Map([...p.pageBuffers].filter(([name]) => !want || want.has(name)))
  const ram = new Uint8Array(p.memSize)
  const bm = p.bytes.subarray(p.starts[p.bitmap]!, p.starts[p.bitmap]! + p.lengths[p.bitmap]!)
  const src = p.starts[p.packed]!
  forPresent(bm, (page, k) => ram.set(p.bytes.subarray(src + k * V86_PAGE, src + (k + 1) * V86_PAGE), page * V86_PAGE))
  const regions: Record<string, Uint8Array> = { [RAM]: ram }
  for (const [name, id] of mapped) regions[name] = p.bytes.subarray(p.starts[id]!, p.starts[id]! + p.lengths[id]!)
  return {
    regions,
    blobs: { [V86_BLOBS.descriptor]: descriptorBytes(p, mapped), [V86_BLOBS.head]: p.bytes.slice(0, p.block), [V86_BLOBS.bufs]: bufsBlob(p, mapped) },
  }
}

function parseDescriptor(bytes: Uint8Array): V86Descriptor {
  let d: V86Descriptor
  try {
    d = JSON.parse(utf8.decode(bytes))
  } catch (err) {
    throw new CkptError('CKPT_BAD_STATE', 'the v86 descriptor blob is not JSON', {}, err)
  }
  if (typeof d !== 'object' || d === null) throw bad('the v86 descriptor blob is not an object')
  if (d.format !== V86_FORMAT) throw new CkptError('CKPT_VERSION', `v86 adapter format ${d.format}; this version reads format ${V86_FORMAT}`, { format: d.format })
  if (!Number.isSafeInteger(d.length) || !Number.isSafeInteger(d.head) || typeof d.ram !== 'object' || d.ram === null || typeof d.ram.region !== 'string' ||
    !Number.isInteger(d.ram.buffer) || !Number.isInteger(d.ram.bitmap) || typeof d.regions !== 'object' || d.regions === null) {
    throw bad('the v86 descriptor blob lacks fields')
  }
  return d
}

/**
 * Lays out a state from its blobs: the result holds the head and v86.bufs in place; the caller fills
 * `regions` (views of `out` of the buffers' sizes) and calls `fillRam` with the RAM region's content.
 */
function assemble(d: V86Descriptor, head: Uint8Array, bufs: Uint8Array): { out: Uint8Array; regions: { name: string; dst: Uint8Array }[]; fillRam: (ram: Uint8Array) => void } {
  if (head.length !== d.head || d.length < d.head) throw bad(`blob ${V86_BLOBS.head} has ${head.length} bytes, the descriptor says ${d.head}`)
  const { block, info } = parseHead(head, d.length)
  if (block !== head.length) throw bad(`blob ${V86_BLOBS.head} does not end where the buffer block starts`)
  const { starts, lengths } = bufferLayout(info.buffer_infos as unknown[], block, d.length)
  const mapped = new Map<number, string>()
  for (const [name, id] of Object.entries(d.regions)) {
    if (!Number.isInteger(id) || id < 0 || id >= starts.length || mapped.has(id)) throw bad(`the descriptor maps region ${name} onto a bad buffer ${id}`)
    mapped.set(id, name)
  }
  const { buffer: packed, bitmap } = d.ram
  if (packed < 0 || packed >= starts.length || bitmap < 0 || bitmap >= starts.length || mapped.has(packed) || mapped.has(bitmap) || packed === bitmap) {
    throw bad('the descriptor names bad RAM buffers')
  }
  // one allocation of exactly the state's size: out.buffer is what restore_state() takes
  const out = new Uint8Array(d.length)
  out.set(head, 0)
  let r = 0
  for (let i = 0; i < starts.length; i++) {
    if (i === packed || mapped.has(i)) continue
    if (r + lengths[i]! > bufs.length) throw bad(`blob ${V86_BLOBS.bufs} is shorter than its buffers`)
    out.set(bufs.subarray(r, r + lengths[i]!), starts[i]!)
    r += lengths[i]!
  }
  if (r !== bufs.length) throw bad(`blob ${V86_BLOBS.bufs} is longer than its buffers`)
  const bm = out.subarray(starts[bitmap]!, starts[bitmap]! + lengths[bitmap]!)
  let present = 0
  forPresent(bm, () => present++)
  if (present * V86_PAGE !== lengths[packed]) throw bad(`the page bitmap marks ${present} pages, the packed memory has ${lengths[packed]} bytes`)
  const dst = starts[packed]!
  const fillRam = (ram: Uint8Array) =>
    forPresent(bm, (page, k) => {
      if ((page + 1) * V86_PAGE > ram.length) throw bad(`the page bitmap marks page ${page}, outside region ${d.ram.region}`, { page })
      out.set(ram.subarray(page * V86_PAGE, (page + 1) * V86_PAGE), dst + k * V86_PAGE)
    })
  return { out, regions: [...mapped].map(([id, name]) => ({ name, dst: out.subarray(starts[id]!, starts[id]! + lengths[id]!) })), fillRam }
}

/** The inverse of splitV86State: the state, byte for byte. */
export function joinV86State(parts: V86Parts): Uint8Array {
  const blob = (name: string) => {
    const b = parts.blobs?.[name]
    if (!(b instanceof Uint8Array)) throw bad(`the parts lack blob ${name}`)
    return b
  }
  const region = (name: string) => {
    const r = parts.regions?.[name]
    if (!(r instanceof Uint8Array)) throw bad(`the parts lack region ${name}`, { region: name })
    return r
  }
  const d = parseDescriptor(blob(V86_BLOBS.descriptor))
  const a = assemble(d, blob(V86_BLOBS.head), blob(V86_BLOBS.bufs))
  for (const { name, dst } of a.regions) {
    const r = region(name)
    if (r.length !== dst.length) throw new CkptError('CKPT_WRONG_SIZE', `region ${name} has ${r.length} bytes, the state needs ${dst.length}`, { region: name })
    dst.set(r)
  }
  a.fillRam(region(d.ram.region))
  return a.out
}

// ---------------------------------------------------------------------------------------------------
// checkpoints

export interface SaveV86Options {
  /** extra regions (a disk image, say: v86 states do not hold disk contents), blobs and labels for the same checkpoint */
  regions?: Record<string, RegionInput>
  blobs?: Record<string, Uint8Array>
  meta?: Record<string, string>
  /** false: scan every page instead of passing dirty hints (default true) */
  dirtyHints?: boolean
  /** page regions: hand over changed chunks' previous bytes (stored as deltas of them where smaller; default true) */
  chunkDeltas?: boolean
  /** the deterministic driver of the emulator (v86Clock()): its state, taken with the emulator's, goes to blob `v86.clock` */
  clock?: V86Clock
}

export interface V86CheckpointInfo {
  /** bytes of the v86 state */
  stateBytes: number
  /** pages of guest RAM present in the state (non-zero) */
  presentPages: number
  /** chunks passed as dirty per region, or null for a full scan */
  dirty: Record<string, number> | null
  /** ms: save_state(), parsing and page comparison, the checkpoint until durable */
  ms: { save: number; split: number; commit: number }
}

export type V86Checkpoint = Checkpoint & { v86: V86CheckpointInfo }

/** What the adapter remembers of a timeline: the content its last checkpoint stored, to derive dirty hints. */
interface Track {
  chain: Promise<unknown>
  last?: {
    cid: Uint8Array
    /** region -> its content as stored by the last checkpoint */
    images: Map<string, Uint8Array>
    /** RAM page -> 1 if present (non-zero) */
    present: Uint8Array
    memSize: number
  }
}

const tracks = new WeakMap<Timeline, Track>()

function trackOf(tl: Timeline): Track {
  let t = tracks.get(tl)
  if (!t) tracks.set(tl, (t = { chain: Promise.resolve() }))
  return t
}

/**
 * Takes `await emulator.save_state()` and stores it as a checkpoint of `timeline` at `vtime` (see
 * saveV86State). The state is taken when this is called; the emulator may run on at once.
 */
export async function saveV86(timeline: Timeline, emulator: V86Emulator, vtime: bigint | number, opts: SaveV86Options = {}): Promise<V86Checkpoint> {
  if (typeof emulator?.save_state !== 'function') throw new TypeError('emulator must have save_state()')
  const t0 = performance.now()
  const clock = opts.clock?.bytes()
  const state = await emulator.save_state()
  return saveState(timeline, state, vtime, clock ? { ...opts, clock: undefined, blobs: { ...opts.blobs, [V86_BLOBS.clock]: clock } } : opts, performance.now() - t0, !!clock)
}

/**
 * Stores a v86 state (save_state()'s ArrayBuffer) as a checkpoint. Calls on one timeline run in call
 * order; each resolves when its checkpoint is durable. Guest pages and VGA pages that did not change
 * since the adapter's previous checkpoint of this timeline are passed as clean (dirty hints), exactly:
 * the adapter keeps the content it stored and compares every present page against it. When the
 * timeline's head is not the adapter's last checkpoint (another writer, a failure), it scans in full.
 */
export function saveV86State(timeline: Timeline, state: ArrayBuffer | Uint8Array, vtime: bigint | number, opts: SaveV86Options = {}): Promise<V86Checkpoint> {
  const clock = opts.clock?.bytes()
  return saveState(timeline, state, vtime, clock ? { ...opts, clock: undefined, blobs: { ...opts.blobs, [V86_BLOBS.clock]: clock } } : opts, 0, !!clock)
}

function saveState(tl: Timeline, state: ArrayBuffer | Uint8Array, vtime: bigint | number, opts: SaveV86Options, saveMs: number, clock = false): Promise<V86Checkpoint> {
  const track = trackOf(tl)
  const run = track.chain.then(() => commit(tl, track, state, vtime, opts, saveMs, clock))
  track.chain = run.catch(() => {})
  return run
}

const sameBytes = (a: Uint8Array | null, b: Uint8Array | undefined) => !!a && !!b && buf(a).equals(buf(b))

/**
 * The state's packed RAM pages into `ram` (the image of guest memory), `present` kept as the page
 * bitmap. With hints (ram and present hold what the last checkpoint stored) the pages that differ
 * from it are listed; without, everything is unpacked anew.
 */
function unpackRam(p: Parsed, ram: Uint8Array, present: Uint8Array, hints: boolean): { dirtyPages: number[]; nPresent: number } {
  const pages = Math.floor(p.memSize / V86_PAGE)
  const bm = p.bytes.subarray(p.starts[p.bitmap]!, p.starts[p.bitmap]! + p.lengths[p.bitmap]!)
  const src = buf(p.bytes.subarray(p.starts[p.packed]!, p.starts[p.packed]! + p.lengths[p.packed]!))
  const ramB = buf(ram)
  const dirtyPages: number[] = []
  let nPresent = 0
  if (hints) {
    let k = 0
    for (let page = 0; page < pages; page++) {
      const on = (bm[page >> 3]! >> (page & 7)) & 1
      if (on) {
        const s = k++ * V86_PAGE
        const d = page * V86_PAGE
        if (!present[page] || src.compare(ramB, d, d + V86_PAGE, s, s + V86_PAGE) !== 0) {
          src.copy(ramB, d, s, s + V86_PAGE)
          dirtyPages.push(page)
        }
        present[page] = 1
      } else if (present[page]) {
        ram.fill(0, page * V86_PAGE, (page + 1) * V86_PAGE)
        present[page] = 0
        dirtyPages.push(page)
      }
    }
    nPresent = k
  } else {
    ram.fill(0)
    forPresent(bm, (page, k) => {
      src.copy(ramB, page * V86_PAGE, k * V86_PAGE, (k + 1) * V86_PAGE)
      present[page] = 1
      nPresent++
    })
  }
  return { dirtyPages, nPresent }
}

async function commit(tl: Timeline, track: Track, state: ArrayBuffer | Uint8Array, vtime: bigint | number, opts: SaveV86Options, saveMs: number, clock: boolean): Promise<V86Checkpoint> {
  const t0 = performance.now()
  const p = parseState(state)
  const cfg = tl.record.regions
  const ramCfg = cfg[RAM]
  if (!ramCfg || ramCfg.size !== p.memSize) {
    throw new CkptError('CKPT_TIMELINE_CONFIG', `timeline ${tl.name} needs a region ${RAM} of ${p.memSize} bytes (create it with v86Regions(state))`, {
      timeline: tl.name,
      region: RAM,
      size: p.memSize,
    })
  }
  for (const name of Object.keys(opts.blobs ?? {})) {
    if (clock && name === V86_BLOBS.clock) continue
    if (name === V86_BLOBS.descriptor || name.startsWith('v86.')) throw new CkptError('CKPT_BAD_ARGUMENT', `blob ${name} is the adapter's own`, { blob: name })
  }
  // page buffers go to regions the timeline has at their size, the rest into v86.bufs
  const mapped = new Map<string, number>()
  for (const [name, id] of p.pageBuffers) if (cfg[name]?.size === p.lengths[id]) mapped.set(name, id)
  for (const name of Object.keys(opts.regions ?? {})) {
    if (name === RAM || mapped.has(name)) throw new CkptError('CKPT_BAD_ARGUMENT', `region ${name} is the adapter's own`, { region: name })
  }

  const last = track.last
  const hints = opts.dirtyHints !== false && last !== undefined && last.memSize === p.memSize && sameBytes(tl.headBytes(), last.cid) &&
    [...mapped.keys()].every((n) => last.images.has(n))
  const images = hints ? last!.images : new Map<string, Uint8Array>()
  const pages = Math.floor(p.memSize / V86_PAGE)
  const present = hints ? last!.present : new Uint8Array(pages)
  const regions: Record<string, RegionInput> = {}
  const dirtyCounts: Record<string, number> = {}
  track.last = undefined // until this checkpoint is durable, the images are not what the timeline holds

  // RAM: unpack into the image, noting the pages that differ from what the last checkpoint stored
  const ram = images.get(RAM) ?? new Uint8Array(p.memSize)
  images.set(RAM, ram)
  const { dirtyPages, nPresent } = unpackRam(p, ram, present, hints)
  const ramChunks = pageChunks(dirtyPages, ramCfg.chunkSize ?? V86_PAGE)
  regions[RAM] = hints ? { data: ram, dirty: ramChunks } : { data: ram, stable: true }
  dirtyCounts[RAM] = ramChunks.length

  // page regions: a copy of the buffer, compared chunk by chunk with the last one
  for (const [name, id] of mapped) {
    const cs = cfg[name]!.chunkSize ?? V86_PAGE
    const now = p.bytes.subarray(p.starts[id]!, p.starts[id]! + p.lengths[id]!)
    let img = images.get(name)
    if (!hints || !img || img.length !== now.length) {
      img = now.slice()
      images.set(name, img)
      regions[name] = { data: img, stable: true }
      continue
    }
    const dirty: number[] = []
    const aside = new Aside(cs)
    refreshChunks(now, 0, img, 0, now.length, cs, dirty, aside)
    regions[name] = opts.chunkDeltas === false ? { data: img, dirty } : { data: img, dirty, previous: aside.bytes }
    dirtyCounts[name] = dirty.length
  }
  for (const name of images.keys()) if (name !== RAM && !mapped.has(name)) images.delete(name)

  const input: CheckpointInput = {
    vtime,
    regions: { ...opts.regions, ...regions },
    blobs: { ...opts.blobs, [V86_BLOBS.descriptor]: descriptorBytes(p, mapped), [V86_BLOBS.head]: p.bytes.subarray(0, p.block), [V86_BLOBS.bufs]: bufsBlob(p, mapped) },
    ...(opts.meta ? { meta: opts.meta } : {}),
  }
  const t1 = performance.now()
  const ck = await tl.checkpoint(input)
  track.last = { cid: ck.cid.bytes, images, present, memSize: p.memSize }
  return {
    ...ck,
    v86: {
      stateBytes: p.bytes.length,
      presentPages: nPresent,
      dirty: hints ? dirtyCounts : null,
      ms: { save: saveMs, split: t1 - t0, commit: performance.now() - t1 },
    },
  }
}

/** Dirty pages as chunk indexes of a region cut in chunkSize chunks. */
function pageChunks(pages: number[], chunkSize: number): number[] {
  if (chunkSize === V86_PAGE) return pages
  const out: number[] = []
  for (const p of pages) {
    const first = Math.floor((p * V86_PAGE) / chunkSize)
    const last = Math.floor(((p + 1) * V86_PAGE - 1) / chunkSize)
    for (let c = first; c <= last; c++) if (out.length === 0 || out[out.length - 1]! < c) out.push(c)
  }
  return out
}

export interface RestoreV86Options {
  /** a scratch buffer of the guest's memory size for RAM (default: a new SharedArrayBuffer-backed one) */
  scratch?: Uint8Array
  /** the deterministic driver: bound to `emulator` at the checkpoint's clock state (blob `v86.clock`) before restore_state */
  clock?: V86Clock
}

/** The clock state a checkpoint stored, bound to the emulator (before its restore_state: set_tsc reads the clock). */
function bindClock(clock: V86Clock, emulator: V86Emulator, bytes: Uint8Array | undefined, where: string): V86ClockState {
  if (!bytes) throw new CkptError('CKPT_NOT_FOUND', `${where} holds no clock state (blob ${V86_BLOBS.clock}): it was saved without a clock`)
  let st: V86ClockState
  try {
    st = parseV86Clock(bytes)
  } catch (err) {
    throw new CkptError('CKPT_BAD_STATE', `blob ${V86_BLOBS.clock} of ${where} is not a clock state`, {}, err)
  }
  clock.bind(emulator, st)
  return st
}

/**
 * The v86 state of a checkpoint, byte-identical to what save_state() returned; loaded into `emulator`
 * (restore_state) when one is given. The result's `.buffer` is exactly the state.
 */
export async function restoreV86(store: CkptStore, ref: string | CID, emulator?: V86Emulator, opts: RestoreV86Options = {}): Promise<Uint8Array> {
  if (emulator !== undefined && typeof emulator?.restore_state !== 'function') throw new TypeError('emulator must have restore_state()')
  const cid = await store.resolve(ref)
  const m = await store.manifest(cid)
  if (!m.blobs[V86_BLOBS.descriptor]) throw new CkptError('CKPT_NOT_FOUND', `checkpoint ${cid} holds no v86 state (no blob ${V86_BLOBS.descriptor})`, { cid: cid.toString() })
  const d = parseDescriptor(await store.readBlob(cid, V86_BLOBS.descriptor))
  const head = await store.readBlob(cid, V86_BLOBS.head)
  const bufs = await store.readBlob(cid, V86_BLOBS.bufs)
  const a = assemble(d, head, bufs)
  for (const { name, dst } of a.regions) {
    const r = m.regions[name]
    if (!r || r.size !== dst.length) throw bad(`checkpoint ${cid} has no region ${name} of ${dst.length} bytes`, { region: name })
    await store.restore(cid, name, dst)
  }
  const r = m.regions[d.ram.region]
  if (!r) throw bad(`checkpoint ${cid} has no region ${d.ram.region}`, { region: d.ram.region })
  const scratch = opts.scratch && opts.scratch.length === r.size ? opts.scratch : new Uint8Array(new SharedArrayBuffer(r.size))
  await store.restore(cid, d.ram.region, scratch)
  a.fillRam(scratch)
  const out = a.out
  if (emulator && opts.clock) bindClock(opts.clock, emulator, m.blobs[V86_BLOBS.clock] ? await store.readBlob(cid, V86_BLOBS.clock) : undefined, `checkpoint ${cid}`)
  if (emulator) await restoreV86Emulator(emulator, out)
  return out
}

/** What gotoV86 needs of a cursor (store.cursor(timeline) fits). */
export interface V86Cursor {
  readonly regions: Readonly<Record<string, Uint8Array>>
  readonly blobs: Readonly<Record<string, Uint8Array>>
  goto(target: string | CID | bigint | number): Promise<JumpResult>
}

export interface V86Jump extends JumpResult {
  /** the state the cursor now holds (its `.buffer` is what restore_state took) */
  state: Uint8Array
  /** the checkpoint's clock state, bound to the emulator (with `clock`) */
  clock?: V86ClockState
  /** ms: the cursor's jump (JumpResult.ms), joining the state, the emulator's restore_state */
  v86: { joinMs: number; restoreMs: number }
}

/**
 * Moves a cursor over a timeline of v86 checkpoints to `target` (a reference, or a vtime: the
 * checkpoint at or before it) and loads the state into `emulator` when given, the clock bound first
 * when given. The cursor's buffers are its own (the emulator keeps its memory), so nothing needs
 * marking dirty between jumps: a jump reads only the chunks that differ; building the state and
 * restore_state() copy the whole state.
 */
export async function gotoV86(cursor: V86Cursor, target: string | CID | bigint | number, emulator?: V86Emulator, opts: { clock?: V86Clock } = {}): Promise<V86Jump> {
  if (emulator !== undefined && typeof emulator?.restore_state !== 'function') throw new TypeError('emulator must have restore_state()')
  const jump = await cursor.goto(target)
  const t0 = performance.now()
  const state = joinV86State({ regions: cursor.regions, blobs: cursor.blobs })
  const t1 = performance.now()
  const where = `checkpoint ${jump.to.cid}`
  const clock = emulator && opts.clock ? bindClock(opts.clock, emulator, cursor.blobs[V86_BLOBS.clock], where) : undefined
  if (emulator) await restoreV86Emulator(emulator, state)
  return { ...jump, state, ...(clock ? { clock } : {}), v86: { joinMs: t1 - t0, restoreMs: performance.now() - t1 } }
}
