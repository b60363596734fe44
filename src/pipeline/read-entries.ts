/**
 * The worker's side of a read (restore, verify, export): pack entries read with few large preads,
 * checked, decompressed straight into their destination and re-hashed against their CIDs. An entry
 * whose CID an earlier entry of the same task carries (`same`) is neither read nor decompressed nor
 * hashed again: it takes the bytes of that entry, which were proven a moment before.
 */
import fs from 'node:fs'
import { preadUpTo } from '../../codecs/bytes.js'
import { blake3Equals } from '../../codecs/blake3.js'
import { AT_REST } from '../../codecs/compress.js'
import { ENTRY_HEADER_SIZE, inflatePayload, isFault } from '../../codecs/pack-format.js'
import { encodeNodeInto } from '../../codecs/tree-node.js'
import type { ReadResult, ReadTask } from './tasks.js'

/**
 * A coalesced read spans at most RUN_MAX bytes (more for one larger entry) and skips at most RUN_GAP
 * bytes between two entries (copying more costs more than another pread). Reads of ~128 KiB stay in the core's cache until the entries are
 * decompressed: measured here, preads from the page cache ran at 4-10 GB/s in 32-128 KiB pieces and
 * at 1.2-2.2 GB/s in 256 KiB-4 MiB pieces.
 */
const RUN_MAX = 128 << 10
const RUN_GAP = 4 << 10

let scratch = Buffer.allocUnsafe(1 << 20)
let outScratch = Buffer.allocUnsafe(1 << 20)
/** file destinations: the task's chunks, decompressed here first, then written with few pwritevs */
let staging = Buffer.allocUnsafe(4 << 20)

interface Run {
  /** the run covers the entries to read up to this one (index in `order`) */
  last: number
  start: number
  got: number
}

/** Reads the run of entries starting at order[o] into scratch: one pread of neighbours in one pack. */
function readRun(t: ReadTask, fds: number[], order: Int32Array, o: number): Run | ReadResult {
  const i = order[o]!
  const f = t.fileIdx![i]!
  let last = o
  const start = t.offsets[i]!
  let end = start + ENTRY_HEADER_SIZE + t.storedLengths[i]!
  while (last + 1 < order.length) {
    const j = order[last + 1]!
    if (t.fileIdx![j] !== f || (t.resolvedAt && t.resolvedAt[j]! >= 0)) break
    const next = t.offsets[j]!
    const nextEnd = next + ENTRY_HEADER_SIZE + t.storedLengths[j]!
    if (next < end || next - end > RUN_GAP || nextEnd - start > RUN_MAX) break
    last++
    end = nextEnd
  }
  if (scratch.length < end - start) scratch = Buffer.allocUnsafe(end - start)
  const fd = fds[f]!
  if (fd < 0) return { bad: i, code: 'CKPT_BAD_PACK', message: `pack file ${t.files![f]} is missing or unreadable` }
  try {
    return { last, start, got: preadUpTo(fd, scratch.subarray(0, end - start), start) }
  } catch (err) {
    return { bad: i, code: 'CKPT_BAD_PACK', message: `pack ${t.files![f]} cannot be read: ${(err as Error).message}` }
  }
}

/**
 * entryPayload's check (codecs/pack-format.ts), in place in the scratch: the entry header at `rel`
 * records entry i's stored and raw lengths, codec and CID.
 */
function headerMatches(rel: number, t: ReadTask, i: number): boolean {
  if (scratch.readUInt32LE(rel) !== t.storedLengths[i] || scratch.readUInt32LE(rel + 4) !== t.rawLengths[i] || scratch[rel + 8] !== t.codes[i]) return false
  const c = i * 36
  for (let j = 0; j < 36; j++) if (scratch[rel + 12 + j] !== t.cids[c + j]) return false
  return true
}

/** Where each entry's bytes go in `collected` or the staging buffer: entry order, back to back. */
function positions(t: ReadTask): { pos: Float64Array; total: number } {
  const n = t.rawLengths.length
  const pos = new Float64Array(n)
  let total = 0
  for (let i = 0; i < n; i++) {
    pos[i] = total
    if (!(t.same && t.same[i]! >= 0 && t.outFile)) total += t.rawLengths[i]!
  }
  return { pos, total }
}

export function readEntries(t: ReadTask): ReadResult {
  // a pack file that cannot be opened (deleted, unreadable) fails the first entry in it
  const fds = (t.files ?? []).map((f) => {
    try {
      return fs.openSync(f, 'r')
    } catch {
      return -1
    }
  })
  try {
    return readInto(t, fds)
  } finally {
    for (const fd of fds) if (fd >= 0) fs.closeSync(fd)
  }
}

function readInto(t: ReadTask, fds: number[]): ReadResult {
  const n = t.offsets.length
  const same = t.same
  // the entries to read, in task order (an entry that repeats an earlier CID is not read)
  let m = 0
  const order = new Int32Array(n)
  for (let i = 0; i < n; i++) if (!same || same[i]! < 0) order[m++] = i
  const toRead = order.subarray(0, m)
  const { pos, total } = positions(t)
  let collected: Uint8Array | undefined
  if (t.outFile) {
    if (staging.length < total) staging = Buffer.allocUnsafe(total)
    collected = staging
  } else if (!t.out && !t.verifyOnly) collected = new Uint8Array(total)
  let run: Run = { last: -1, start: 0, got: 0 }
  let next = 0
  for (let o = 0; o < toRead.length; o++) {
    const i = toRead[o]!
    // the entries before i that repeat an earlier one: copied now, in task order
    for (; next < i; next++) if (same && same[next]! >= 0) copySame(t, same, next, pos, collected)
    next = i + 1
    const c = i * 36
    let payload: Uint8Array
    let code = t.codes[i]!
    const r = t.resolvedAt ? t.resolvedAt[i]! : -1
    if (r >= 0) {
      // a chunk delta the caller resolved: its bytes, re-hashed here like every other entry's
      payload = t.resolved!.subarray(r, r + t.rawLengths[i]!)
      code = AT_REST.identity
    } else if (t.payloads) payload = t.payloads.subarray(t.offsets[i]!, t.offsets[i]! + t.storedLengths[i]!)
    else {
      if (o > run.last) {
        const r = readRun(t, fds, toRead, o)
        if ('bad' in r) return r
        run = r
      }
      const rel = t.offsets[i]! - run.start
      const size = ENTRY_HEADER_SIZE + t.storedLengths[i]!
      if (rel + size > run.got) {
        return { bad: i, code: 'CKPT_BAD_PACK', message: `pack ${t.files![t.fileIdx![i]!]} is truncated at offset ${run.start + run.got}` }
      }
      if (!headerMatches(rel, t, i)) return { bad: i, code: 'CKPT_BAD_INDEX', message: 'index entry points at another pack entry' }
      payload = scratch.subarray(rel + ENTRY_HEADER_SIZE, rel + size)
    }
    // decompress straight into the destination: no allocation, no copy
    const len = t.rawLengths[i]!
    let into: Uint8Array
    if (t.out) into = t.out.subarray(t.outOffsets[i]!, t.outOffsets[i]! + len)
    else if (collected) into = collected.subarray(pos[i]!, pos[i]! + len)
    else {
      if (outScratch.length < len) outScratch = Buffer.allocUnsafe(len)
      into = outScratch.subarray(0, len)
    }
    const raw = inflatePayload(code, payload, len, into)
    if (isFault(raw)) return { bad: i, code: raw.fault, message: raw.message }
    if (!blake3Equals(raw, t.cids, c + 4)) return { bad: i, code: 'CKPT_HASH_MISMATCH', message: 'block does not match its hash' }
    if (raw !== into) into.set(raw)
  }
  for (; next < n; next++) if (same && same[next]! >= 0) copySame(t, same, next, pos, collected)
  if (t.outFile) writeStaged(t, pos)
  if (t.zeros && t.out) fillZeros(t.out, t.zeros)
  const badNode = t.nodeCounts && t.out ? encodeNodes(t, t.out) : -1
  if (badNode >= 0) return { bad: n + badNode, code: 'CKPT_HASH_MISMATCH', message: 'tree node does not match its hash' }
  // a destination in plain memory was moved here: it goes back as the result
  return { bad: -1, data: t.outFile ? undefined : (collected ?? (t.out && !(t.out.buffer instanceof SharedArrayBuffer) ? t.out : undefined)) }
}

/** The task's tree nodes encoded into `out`, each hashed against its CID: the first that fails, or -1. */
function encodeNodes(t: ReadTask, out: Uint8Array): number {
  const counts = t.nodeCounts!
  let slot = 0
  for (let k = 0; k < counts.length; k++) {
    const count = counts[k]!
    const e = { count, codecs: t.nodeCodecs!.subarray(slot, slot + count), digests: t.nodeDigests!.subarray(slot * 32, (slot + count) * 32) }
    slot += count
    const at = t.nodeOffsets![k]!
    const end = encodeNodeInto(e, out, at)
    if (!blake3Equals(out.subarray(at, end), t.nodeCids!, k * 36 + 4)) return k
  }
  return -1
}

/** Entry i repeats entry same[i]: its bytes, already proven, copied to where i goes. */
function copySame(t: ReadTask, same: Int32Array, i: number, pos: Float64Array, collected: Uint8Array | undefined): void {
  const j = same[i]!
  const len = t.rawLengths[i]!
  if (t.out) t.out.copyWithin(t.outOffsets[i]!, t.outOffsets[j]!, t.outOffsets[j]! + len)
  // a file's repeats are written from their first entry's staged bytes (writeStaged)
  else if (collected && !t.outFile) collected.copyWithin(pos[i]!, pos[j]!, pos[j]! + len)
}

const ZEROS = new Uint8Array(256 << 10)

/** fill(0) takes a slow byte-wise path on shared memory (~11 µs a page here); a copy is a memcpy. */
function fillZeros(out: Uint8Array, runs: Float64Array): void {
  for (let r = 0; r < runs.length; r += 2) {
    const to = runs[r + 1]!
    for (let at = runs[r]!; at < to; at += ZEROS.length) out.set(to - at < ZEROS.length ? ZEROS.subarray(0, to - at) : ZEROS, at)
  }
}

/** IOV_MAX on Linux: a longer run of chunks is written with several calls */
const IOV_MAX = 1024

/**
 * The staged chunks written to the output file at their offsets: chunks that follow each other in
 * the file go out in one pwritev (4 KiB pages would otherwise cost a system call each).
 */
function writeStaged(t: ReadTask, pos: Float64Array): void {
  const n = t.rawLengths.length
  const order = Array.from({ length: n }, (_, i) => i)
  let sorted = true
  for (let i = 1; i < n && sorted; i++) sorted = t.outOffsets[i - 1]! <= t.outOffsets[i]!
  if (!sorted) order.sort((a, b) => t.outOffsets[a]! - t.outOffsets[b]!)
  const src = (i: number) => pos[t.same && t.same[i]! >= 0 ? t.same[i]! : i]!
  const fd = fs.openSync(t.outFile!, 'r+')
  try {
    for (let k = 0; k < n; ) {
      const at = t.outOffsets[order[k]!]!
      const views: Buffer[] = []
      let end = at
      while (k < n && t.outOffsets[order[k]!]! === end && views.length < IOV_MAX) {
        const i = order[k]!
        const len = t.rawLengths[i]!
        const from = src(i)
        const prev = views.at(-1)
        // a chunk whose staged bytes follow the previous one's extends that view
        if (prev && prev.byteOffset + prev.length === staging.byteOffset + from) views[views.length - 1] = staging.subarray(prev.byteOffset - staging.byteOffset, from + len)
        else views.push(staging.subarray(from, from + len))
        end += len
        k++
      }
      writeVecFully(fd, views, at)
    }
  } finally {
    fs.closeSync(fd)
  }
}

function writeVecFully(fd: number, views: Buffer[], at: number): void {
  let total = 0
  for (const v of views) total += v.length
  let done = fs.writevSync(fd, views, at)
  while (done < total) {
    // a short write (rare: a signal, a full disk): the rest one view at a time
    let skip = done
    for (const v of views) {
      if (skip >= v.length) {
        skip -= v.length
        continue
      }
      for (let o = skip; o < v.length; ) {
        const w = fs.writeSync(fd, v, o, v.length - o, at + done)
        if (w <= 0) throw Object.assign(new Error('no space left on device, write'), { code: 'ENOSPC' })
        o += w
        done += w
      }
      skip = 0
    }
  }
}
