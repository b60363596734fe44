/**
 * Chunk deltas resolved (at-rest codec 4, codecs/chunk-delta.ts): the chain of bases read back to a
 * chunk stored whole and the deltas applied in turn; a damaged base fails with its own CID and never
 * yields a chunk.
 */
import { blake3Equals } from '../codecs/blake3.js'
import { cidToString, type CidBytes } from '../codecs/cid.js'
import { chunkDeltaBase, openChunkDelta } from '../codecs/chunk-delta.js'
import { AT_REST } from '../codecs/compress.js'
import { CkptError } from '../codecs/errors.js'
import { inflatePayload, isFault, openPayload } from '../codecs/pack-format.js'
import { entryError, hashMismatch } from './block-errors.js'
import type { BlockLocation } from './location.js'

/** A chain longer than this is damage (a writer keeps chains far shorter: SPEC.md §5.1). */
export const MAX_CHUNK_CHAIN = 255

/** What resolving a chain reads through: the block store's index and pack reads. */
export interface ChunkSource {
  find(cid: CidBytes): BlockLocation | undefined
  /** the entry's payload, checked against its location (a copy the caller may keep) */
  readAt(cid: CidBytes, loc: BlockLocation): Uint8Array
}

function named(err: unknown, cid: CidBytes, loc: BlockLocation): CkptError {
  const e = err instanceof CkptError ? err : new CkptError('CKPT_BAD_PACK', String(err))
  return new CkptError(e.code, `block ${cidToString(cid)} cannot be read (pack ${loc.pack}, offset ${loc.offset}): ${e.message}`, { cid: cidToString(cid), pack: loc.pack, offset: loc.offset }, err)
}

/** The base's CID a stored chunk delta names (read from its entry). */
export function chunkBaseOf(src: ChunkSource, cid: CidBytes, loc: BlockLocation): CidBytes {
  try {
    return chunkDeltaBase(src.readAt(cid, loc)).slice()
  } catch (err) {
    throw named(err, cid, loc)
  }
}

/**
 * The chunk `cid` (stored at `loc`, whole or as a delta), decompressed, its chain resolved. Only the
 * result is hashed first (a damaged version on the chain cannot give bytes matching the CID); when it
 * does not match, or anything on the chain fails, the chain is resolved again with every version
 * proven, so the error names the block that is damaged. `proveFinal` false: the caller hashes the
 * result itself (a worker does) and resolves again with proofs if it fails.
 */
export function resolveChunk(src: ChunkSource, cid: CidBytes, loc: BlockLocation, proveFinal = true): Uint8Array {
  try {
    const raw = resolve(src, cid, loc, 0, false)
    if (!proveFinal || blake3Equals(raw, cid, 4)) return raw
  } catch (err) {
    if (!(err instanceof CkptError)) throw err
  }
  return resolve(src, cid, loc, 0, true)
}

function resolve(src: ChunkSource, cid: CidBytes, loc: BlockLocation, hops: number, prove: boolean): Uint8Array {
  const payload = src.readAt(cid, loc)
  if (loc.codec !== AT_REST.chunkDelta) {
    const raw = prove ? openPayload(loc.codec, payload, loc.rawLength, cid, 4) : inflatePayload(loc.codec, payload, loc.rawLength)
    if (isFault(raw)) throw entryError(raw, cid, loc)
    return raw
  }
  let baseCid: CidBytes
  try {
    baseCid = chunkDeltaBase(payload)
  } catch (err) {
    throw named(err, cid, loc)
  }
  if (hops >= MAX_CHUNK_CHAIN) throw named(new CkptError('CKPT_BAD_PACK', `its delta chain is longer than ${MAX_CHUNK_CHAIN}`), cid, loc)
  const baseLoc = src.find(baseCid)
  if (!baseLoc) {
    throw new CkptError('CKPT_NOT_FOUND', `block ${cidToString(baseCid)}, the delta base of ${cidToString(cid)}, is not in the store`, { cid: cidToString(baseCid), deltaOf: cidToString(cid) })
  }
  const base = resolve(src, baseCid, baseLoc, hops + 1, prove)
  let raw: Uint8Array
  try {
    raw = openChunkDelta(payload, base, loc.rawLength)
  } catch (err) {
    throw named(err, cid, loc)
  }
  if (prove && !blake3Equals(raw, cid, 4)) throw hashMismatch(cid, loc)
  return raw
}
