/**
 * Block ids: CIDv1 with the BLAKE3-256 multihash. Inside the project a CID travels as its 36 binary
 * bytes (version, codec, hash code, digest length, digest); multiformats' CID class is used only at the
 * API surface, where users print or parse ids.
 */
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { CkptError } from './errors.js'

export const RAW = 0x55
export const DAG_CBOR = 0x71
export const BLAKE3 = 0x1e
export const DIGEST_LENGTH = 32
/** Binary length of every CID this project writes: 0x01, codec, 0x1e, 0x20, 32-byte digest. */
export const CID_LENGTH = 36

export type CidBytes = Uint8Array

/** The 36 CID bytes for a digest; `codec` is RAW or DAG_CBOR (both single-byte varints). */
export function cidBytes(codec: number, digest: Uint8Array): CidBytes {
  const out = new Uint8Array(CID_LENGTH)
  out[0] = 0x01
  out[1] = codec
  out[2] = BLAKE3
  out[3] = DIGEST_LENGTH
  out.set(digest.subarray(0, DIGEST_LENGTH), 4)
  return out
}

/** Validates that bytes are a CID this project can store: v1, raw or dag-cbor, BLAKE3-256. */
export function checkCidBytes(bytes: Uint8Array): void {
  if (
    bytes.length !== CID_LENGTH ||
    bytes[0] !== 0x01 ||
    (bytes[1] !== RAW && bytes[1] !== DAG_CBOR) ||
    bytes[2] !== BLAKE3 ||
    bytes[3] !== DIGEST_LENGTH
  ) {
    throw new CkptError('CKPT_BAD_CID', 'not a CIDv1 raw/dag-cbor BLAKE3-256 id', { bytes: Buffer.from(bytes).toString('hex') })
  }
}

export function cidCodec(cid: CidBytes): number {
  return cid[1]!
}

export function cidDigest(cid: CidBytes): Uint8Array {
  return cid.subarray(4, CID_LENGTH)
}

export function toCID(bytes: CidBytes): CID {
  checkCidBytes(bytes)
  return CID.create(1, bytes[1]!, Digest.create(BLAKE3, bytes.subarray(4, CID_LENGTH)))
}

export function fromCID(cid: CID): CidBytes {
  const bytes = cid.bytes
  checkCidBytes(bytes)
  return bytes
}

/** base32 text form, as multiformats prints CIDv1 (`bafk...` for raw, `bafy...` for dag-cbor). */
export function cidToString(bytes: CidBytes): string {
  return toCID(bytes).toString()
}

export function parseCid(text: string): CidBytes {
  let cid: CID
  try {
    cid = CID.parse(text)
  } catch (err) {
    throw new CkptError('CKPT_BAD_CID', `cannot parse CID ${JSON.stringify(text)}`, { text }, err)
  }
  return fromCID(cid)
}

export function cidEquals(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** Key form for in-memory maps (latin1 keeps it one char per byte). */
export function cidKey(cid: CidBytes): string {
  return Buffer.from(cid.buffer, cid.byteOffset, cid.byteLength).toString('latin1')
}
