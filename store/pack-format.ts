/**
 * Pack file format, version 1 (SPEC.md §Pack files). All integers little-endian.
 *
 *   header  16 B  "CKPTPACK" | u16 version=1 | u16 flags=0 | u32 pack number
 *   entry   52 B + payload
 *           u32 storedLength | u32 rawLength | u8 atRestCodec | u8 deltaDepth | u16 zero
 *           | 36 B CID | u32 crc32 (of the 48 bytes before it and the payload) | payload
 *   footer  32 B  (sealed packs only) "CKPTSEAL" | u32 entryCount | u32 zero | u64 dataEnd | u64 zero
 *
 * Entries are self-describing (CID and lengths), so the index can be rebuilt from packs alone; the
 * crc lets a scan tell a torn or flipped entry from a valid one without decompressing and re-hashing.
 */
import { copyOf } from '../codecs/bytes.js'
import { crc32 } from 'node:zlib'
import { CID_LENGTH } from '../codecs/cid.js'
import { CkptError } from '../codecs/errors.js'

export const PACK_MAGIC = Buffer.from('CKPTPACK', 'latin1')
export const SEAL_MAGIC = Buffer.from('CKPTSEAL', 'latin1')
export const PACK_VERSION = 1
export const PACK_HEADER_SIZE = 16
export const ENTRY_HEADER_SIZE = 52
export const FOOTER_SIZE = 32
/** Largest block the format accepts (a 1 MiB chunk, a node of 65,536 links, with room to spare). */
export const MAX_BLOCK_SIZE = 16 << 20

export interface EntryHeader {
  storedLength: number
  rawLength: number
  codec: number
  depth: number
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
  if (version !== PACK_VERSION) throw new CkptError('CKPT_VERSION', `pack format version ${version} is not supported`, { version })
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
): number {
  out.set(payload, offset + ENTRY_HEADER_SIZE)
  return writeEntryHeader(out, offset, cid, codec, depth, rawLength, payload.length)
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
): number {
  const b = Buffer.from(out.buffer, out.byteOffset, out.byteLength)
  b.writeUInt32LE(storedLength, offset)
  b.writeUInt32LE(rawLength, offset + 4)
  b[offset + 8] = codec
  b[offset + 9] = depth
  b.writeUInt16LE(0, offset + 10)
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
    cid: copyOf(b, 12, 12 + CID_LENGTH),
    crc: buf.readUInt32LE(48),
  }
  if (buf.readUInt16LE(10) !== 0 || h.storedLength > MAX_BLOCK_SIZE || h.rawLength > MAX_BLOCK_SIZE) {
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
