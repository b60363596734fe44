/**
 * A block's location (index key family 'b', SPEC.md §6) and a pack's record ('p'), and their byte
 * encodings in the index.
 */
import { CkptError } from '../codecs/errors.js'
import { allocBytes } from './alloc.js'

export interface BlockLocation {
  pack: number
  /** offset of the entry header in the pack */
  offset: number
  storedLength: number
  rawLength: number
  codec: number
  /** delta chain length for nodeDelta entries, 0 otherwise */
  depth: number
}

export interface PackRecord {
  committedLength: number
  sealed: boolean
  /** a damaged pack a repair took out of use: never appended to, no footer expected; gc rewrites it */
  retired?: boolean
  entries: number
}

export const LOCATION_SIZE = 22

export function encodeLocation(l: BlockLocation): Uint8Array {
  const v = allocBytes(LOCATION_SIZE)
  const b = Buffer.from(v.buffer, v.byteOffset, LOCATION_SIZE)
  b.writeUInt32LE(l.pack, 0)
  b.writeUInt32LE(l.offset % 0x100000000, 4)
  b.writeUInt32LE(Math.floor(l.offset / 0x100000000), 8)
  b.writeUInt32LE(l.storedLength, 12)
  b.writeUInt32LE(l.rawLength, 16)
  b[20] = l.codec
  b[21] = l.depth
  return b
}

export function decodeLocation(v: Uint8Array): BlockLocation {
  if (v.length !== LOCATION_SIZE) throw new CkptError('CKPT_BAD_INDEX', `index value has ${v.length} bytes, expected ${LOCATION_SIZE}`)
  const b = Buffer.from(v.buffer, v.byteOffset, v.byteLength)
  return {
    pack: b.readUInt32LE(0),
    offset: b.readUInt32LE(4) + b.readUInt32LE(8) * 0x100000000,
    storedLength: b.readUInt32LE(12),
    rawLength: b.readUInt32LE(16),
    codec: b[20]!,
    depth: b[21]!,
  }
}

export function encodePackRecord(r: PackRecord): Uint8Array {
  const b = Buffer.alloc(13)
  b.writeBigUInt64LE(BigInt(r.committedLength), 0)
  b[8] = r.retired ? 2 : r.sealed ? 1 : 0
  b.writeUInt32LE(r.entries, 9)
  return b
}

export function decodePackRecord(v: Uint8Array): PackRecord {
  if (v.length !== 13) throw new CkptError('CKPT_BAD_INDEX', 'bad pack record in the index')
  const b = Buffer.from(v.buffer, v.byteOffset, v.byteLength)
  return { committedLength: Number(b.readBigUInt64LE(0)), sealed: b[8] === 1, retired: b[8] === 2, entries: b.readUInt32LE(9) }
}

