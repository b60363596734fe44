/**
 * Pack file format, version 2 (SPEC.md §5; version 1 is read too). All integers little-endian.
 *
 *   header  16 B  "CKPTPACK" | u16 version=2 | u16 flags=0 | u32 pack number
 *   entry   52 B + payload
 *           u32 storedLength | u32 rawLength | u8 atRestCodec | u8 deltaDepth | u8 kind | u8 zero
 *           | 36 B CID | u32 crc32 (of the 48 bytes before it and the payload) | payload
 *   footer  32 B  (sealed packs only) "CKPTSEAL" | u32 entryCount | u32 zero | u64 dataEnd | u64 zero
 *
 * kind: 0 a block (chunk or tree node), 1 a block that is a checkpoint manifest, 2 a catalog record
 * (store/catalog-record.ts; not a block: never indexed by CID). Version-1 packs have kind 0 only.
 * Entries are self-describing (CID, lengths, kind), so the index and the catalog can be rebuilt from
 * packs alone; the crc lets a scan tell a torn or flipped entry from a valid one without
 * decompressing and re-hashing.
 */
import { copyOf } from './bytes.js'
import { crc32 } from 'node:zlib'
import { CID_LENGTH } from './cid.js'
import { CkptError } from './errors.js'
import { blake3 } from './blake3.js'
import { AT_REST, decompressBlock } from './compress.js'

export const PACK_MAGIC = Buffer.from('CKPTPACK', 'latin1')
export const SEAL_MAGIC = Buffer.from('CKPTSEAL', 'latin1')
/** the version this build writes */
export const PACK_VERSION = 2
/** versions this build reads (1: no entry kinds, every entry a block) */
export const PACK_VERSIONS: readonly number[] = [1, 2]
export const PACK_HEADER_SIZE = 16
export const ENTRY_HEADER_SIZE = 52
export const FOOTER_SIZE = 32
/** Largest block the format accepts (a 1 MiB chunk, a node of 65,536 links, with room to spare). */
export const MAX_BLOCK_SIZE = 16 << 20

/** What an entry holds (header byte 10). */
export const ENTRY_KIND = {
  /** a chunk, a tree node or another block */
  block: 0,
  /** a block that is a checkpoint manifest */
  manifest: 1,
  /** a catalog record: the catalog change of one commit (never indexed as a block) */
  record: 2,
} as const
export type EntryKind = (typeof ENTRY_KIND)[keyof typeof ENTRY_KIND]
export const MAX_ENTRY_KIND = 2

export interface EntryHeader {
  storedLength: number
  rawLength: number
  codec: number
  depth: number
  kind: number
  cid: Uint8Array
  crc: number
}

export function encodePackHeader(packNo: number): Uint8Array {
  const b = Buffer.alloc(PACK_HEADER_SIZE)
  PACK_MAGIC.copy(b, 0)
  b.writeUInt16LE(PACK_VERSION, 8)
  b.writeUInt16LE(0, 10)
  b.writeUInt32LE(packNo, 12)
  return b
}

export function decodePackHeader(b: Uint8Array): { version: number; packNo: number } {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength)
  if (buf.length < PACK_HEADER_SIZE || !buf.subarray(0, 8).equals(PACK_MAGIC)) {
    throw new CkptError('CKPT_BAD_PACK', 'not a ckpt pack file (bad magic)')
  }
  const version = buf.readUInt16LE(8)
  if (!PACK_VERSIONS.includes(version)) throw new CkptError('CKPT_VERSION', `pack format version ${version} is not supported`, { version })
  return { version, packNo: buf.readUInt32LE(12) }
}

/** Writes one entry (header + payload) into out at offset; returns bytes written. */
export function writeEntry(
  out: Buffer,
  offset: number,
  cid: Uint8Array,
  codec: number,
  depth: number,
  rawLength: number,
  payload: Uint8Array,
  kind = 0,
): number {
  out.set(payload, offset + ENTRY_HEADER_SIZE)
  return writeEntryHeader(out, offset, cid, codec, depth, rawLength, payload.length, kind)
}

/**
 * Writes the 52-byte header of an entry whose payload (storedLength bytes) is already in place at
 * offset + 52, checksum included; returns the entry's size.
 */
export function writeEntryHeader(
  out: Uint8Array,
  offset: number,
  cid: Uint8Array,
  codec: number,
  depth: number,
  rawLength: number,
  storedLength: number,
  kind = 0,
): number {
  const b = Buffer.from(out.buffer, out.byteOffset, out.byteLength)
  b.writeUInt32LE(storedLength, offset)
  b.writeUInt32LE(rawLength, offset + 4)
  b[offset + 8] = codec
  b[offset + 9] = depth
  b[offset + 10] = kind
  b[offset + 11] = 0
  b.set(cid, offset + 12)
  let c = crc32(b.subarray(offset, offset + 48))
  c = crc32(b.subarray(offset + ENTRY_HEADER_SIZE, offset + ENTRY_HEADER_SIZE + storedLength), c)
  b.writeUInt32LE(c >>> 0, offset + 48)
  return ENTRY_HEADER_SIZE + storedLength
}

export function decodeEntryHeader(b: Uint8Array): EntryHeader {
  if (b.length < ENTRY_HEADER_SIZE) throw new CkptError('CKPT_BAD_PACK', 'truncated pack entry header')
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength)
  const h = {
    storedLength: buf.readUInt32LE(0),
    rawLength: buf.readUInt32LE(4),
    codec: buf[8]!,
    depth: buf[9]!,
    kind: buf[10]!,
    cid: copyOf(b, 12, 12 + CID_LENGTH),
    crc: buf.readUInt32LE(48),
  }
  if (buf[10]! > MAX_ENTRY_KIND || buf[11] !== 0 || h.storedLength > MAX_BLOCK_SIZE || h.rawLength > MAX_BLOCK_SIZE) {
    throw new CkptError('CKPT_BAD_PACK', 'implausible pack entry header', { storedLength: h.storedLength, rawLength: h.rawLength })
  }
  return h
}

/** True when the crc over header and payload matches. */
export function entryCrcOk(headerBytes: Uint8Array, payload: Uint8Array): boolean {
  const h = Buffer.from(headerBytes.buffer, headerBytes.byteOffset, ENTRY_HEADER_SIZE)
  let c = crc32(h.subarray(0, 48))
  c = crc32(payload, c)
  return (c >>> 0) === h.readUInt32LE(48)
}

export function encodeFooter(entryCount: number, dataEnd: number): Uint8Array {
  const b = Buffer.alloc(FOOTER_SIZE)
  SEAL_MAGIC.copy(b, 0)
  b.writeUInt32LE(entryCount, 8)
  b.writeBigUInt64LE(BigInt(dataEnd), 16)
  return b
}

export function decodeFooter(b: Uint8Array): { entryCount: number; dataEnd: number } | undefined {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength)
  if (buf.length !== FOOTER_SIZE || !buf.subarray(0, 8).equals(SEAL_MAGIC)) return undefined
  return { entryCount: buf.readUInt32LE(8), dataEnd: Number(buf.readBigUInt64LE(16)) }
}

/*
 * The read path: every reader of pack entries (the block store, the restore workers, verify, the
 * index rebuild, repair) checks an entry and opens its payload with these two functions, so there is
 * one definition of "this entry is the block the index says" and of "this payload is that block".
 */

/** Why an entry is not the block it should be: the code a reader reports, and a message. */
export interface EntryFault {
  fault: 'CKPT_BAD_INDEX' | 'CKPT_BAD_PACK' | 'CKPT_HASH_MISMATCH'
  message: string
}

/** What an index location promises about an entry (SPEC.md §6: the location value). */
export interface ExpectedEntry {
  cid: Uint8Array
  storedLength: number
  rawLength: number
  codec: number
}

/**
 * The payload of `entry` (a header and its payload, read at a location the index gave) when the
 * header is the one the location promises: the same CID, lengths and codec. Otherwise the index
 * points at another entry (CKPT_BAD_INDEX). `cidAt` reads the expected CID from a larger array.
 */
export function entryPayload(entry: Uint8Array, expect: ExpectedEntry, cidAt = 0): Uint8Array | EntryFault {
  const size = ENTRY_HEADER_SIZE + expect.storedLength
  if (entry.length < size) return { fault: 'CKPT_BAD_PACK', message: 'pack entry is truncated' }
  const b = Buffer.from(entry.buffer, entry.byteOffset, ENTRY_HEADER_SIZE)
  let same = b.readUInt32LE(0) === expect.storedLength && b.readUInt32LE(4) === expect.rawLength && b[8] === expect.codec
  for (let j = 0; same && j < CID_LENGTH; j++) same = b[12 + j] === expect.cid[cidAt + j]
  if (!same) return { fault: 'CKPT_BAD_INDEX', message: 'index entry points at another pack entry' }
  return entry.subarray(ENTRY_HEADER_SIZE, size)
}

/**
 * A payload opened and proven: decompressed under `codec` (into `into` when it has rawLength bytes)
 * and re-hashed, the BLAKE3 digest compared with the 32 bytes of `digest` at `digestAt` (a CID's
 * digest part). Node deltas (codec 3) are not blocks alone: only their resolved chain can be proven,
 * so they are not opened here.
 */
export function openPayload(codec: number, payload: Uint8Array, rawLength: number, digest: Uint8Array, digestAt = 0, into?: Uint8Array): Uint8Array | EntryFault {
  const raw = inflatePayload(codec, payload, rawLength, into)
  return isFault(raw) ? raw : proveRaw(raw, digest, digestAt)
}

/** openPayload's first step: the payload decompressed (not proven yet: a reader that only wants some blocks looks first). */
export function inflatePayload(codec: number, payload: Uint8Array, rawLength: number, into?: Uint8Array): Uint8Array | EntryFault {
  if (codec === AT_REST.nodeDelta) return { fault: 'CKPT_BAD_PACK', message: 'a node delta is opened through its chain' }
  if (codec === AT_REST.chunkDelta) return { fault: 'CKPT_BAD_PACK', message: 'a chunk delta is opened with its base' }
  try {
    return decompressBlock(codec, payload, rawLength, into)
  } catch (err) {
    return { fault: 'CKPT_BAD_PACK', message: (err as Error).message }
  }
}

/** openPayload's second step: `raw` when its BLAKE3 digest is the 32 bytes of `digest` at `digestAt`. */
export function proveRaw(raw: Uint8Array, digest: Uint8Array, digestAt = 0): Uint8Array | EntryFault {
  const d = blake3(raw)
  for (let j = 0; j < 32; j++) if (d[j] !== digest[digestAt + j]) return { fault: 'CKPT_HASH_MISMATCH', message: 'block does not match its hash' }
  return raw
}

export function isFault(r: Uint8Array | EntryFault): r is EntryFault {
  return !(r instanceof Uint8Array)
}
