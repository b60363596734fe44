/** The errors the block store's read path throws, naming the block, its pack and offset. */
import { cidToString, type CidBytes } from '../codecs/cid.js'
import { decompressBlock } from '../codecs/compress.js'
import { CkptError } from '../codecs/errors.js'
import type { EntryFault } from '../codecs/pack-format.js'
import type { BlockLocation } from './location.js'

/** A fault of the read path as the error a reader throws, naming the block, its pack and offset. */
export function entryError(f: EntryFault, cid: CidBytes, loc: BlockLocation): CkptError {
  const what =
    f.fault === 'CKPT_HASH_MISMATCH'
      ? 'does not match its hash'
      : f.fault === 'CKPT_BAD_INDEX'
        ? 'has an index entry that points at another pack entry'
        : `cannot be read: ${f.message}`
  return new CkptError(f.fault, `block ${cidToString(cid)} ${what} (pack ${loc.pack}, offset ${loc.offset})`, { cid: cidToString(cid), pack: loc.pack, offset: loc.offset })
}

export function hashMismatch(cid: CidBytes, loc: BlockLocation): CkptError {
  return new CkptError('CKPT_HASH_MISMATCH', `block ${cidToString(cid)} does not match its hash (pack ${loc.pack}, offset ${loc.offset})`, {
    cid: cidToString(cid),
    pack: loc.pack,
    offset: loc.offset,
  })
}

/** Decompression failures name the block, its pack and offset, like every other read error. */
export function decompress(cid: CidBytes, loc: BlockLocation, payload: Uint8Array, into?: Uint8Array): Uint8Array {
  try {
    return decompressBlock(loc.codec, payload, loc.rawLength, into)
  } catch (err) {
    const code = err instanceof CkptError ? err.code : 'CKPT_BAD_PACK'
    throw new CkptError(code, `block ${cidToString(cid)} cannot be decompressed (pack ${loc.pack}, offset ${loc.offset})`, {
      cid: cidToString(cid),
      pack: loc.pack,
      offset: loc.offset,
      codec: loc.codec,
    }, err)
  }
}
