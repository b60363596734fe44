/**
 * Parts of bundle import (bundle-import.ts) that hold no import state: the keys of its exact sets
 * (ImportKeys), the tree nodes of the last checkpoints it proved (RecentNodes), and the CID checks and
 * errors it reports.
 */
import { copyOf } from '../codecs/bytes.js'
import { CID as CIDClass } from 'multiformats/cid'
import { blake3 } from '../codecs/blake3.js'
import { CID_LENGTH, cidKey, cidToString, DAG_CBOR, RAW, type CidBytes } from '../codecs/cid.js'
import { CkptError } from '../codecs/errors.js'
import type { NodeEntries } from '../codecs/tree-node.js'
import { randomBytes } from 'node:crypto'
import type { Geometry } from './region-tree.js'

export function cidCodecOf(cid: CidBytes): number {
  return cid[1]!
}

export function keyBytes(key: string): Uint8Array {
  return Buffer.from(key, 'latin1')
}

export function cidFrom(codec: number, digests: Uint8Array, slot: number): CidBytes {
  const c = new Uint8Array(CID_LENGTH)
  c.set([0x01, codec, 0x1e, 0x20])
  c.set(digests.subarray(slot * 32, slot * 32 + 32), 4)
  return c
}

/** A root that does not decode as a checkpoint manifest: its code (CKPT_BAD_MANIFEST, CKPT_VERSION) and reason. */
export function notAManifest(cid: CidBytes, offset: number, err: unknown): CkptError {
  const code = err instanceof CkptError ? err.code : 'CKPT_BAD_MANIFEST'
  return new CkptError(code, `root ${cidToString(cid)} is not a checkpoint manifest: ${(err as Error).message}`, { cid: cidToString(cid), offset, ...(err instanceof CkptError ? err.details : {}) }, err)
}

/**
 * Keys of the import's two exact sets (SeenSets keep 128 digest bits), bound to what was proven of a
 * block rather than to its CID alone: a raw block's key mixes in its length, a tree node's key the
 * kind of place it was proven valid for — level, chunk size and fan-out for a node inside a level
 * ('full': every slot used, every chunk below full-size) or for the slots before its last
 * ('prefix'), plus the region's size for the node ending its level ('last', whose subtree holds the
 * short last chunk). The mix is BLAKE3 of a per-import random secret and the context, XORed into the
 * digest bits the sets keep, so no bundle can be crafted to make one key stand for another.
 */
export class ImportKeys {
  private readonly secret = randomBytes(32)
  private readonly lengthMasks = new Map<number, Uint8Array>()
  private readonly placeMasks = new Map<string, Uint8Array>()
  private readonly out = new Uint8Array(CID_LENGTH)

  private derive(tag: string): Uint8Array {
    return blake3(Buffer.concat([this.secret, Buffer.from(tag)])).slice(0, 16)
  }

  private mix(cid: CidBytes, mask: Uint8Array): Uint8Array {
    const o = this.out
    o.set(cid)
    for (let i = 0; i < 16; i++) o[4 + i]! ^= mask[i]!
    return o
  }

  /** The key of a raw block of `length` bytes: a view of reused memory, valid until the next call. */
  raw(cid: CidBytes, length: number): Uint8Array {
    let mask = this.lengthMasks.get(length)
    if (!mask) {
      if (this.lengthMasks.size >= 1 << 16) this.lengthMasks.clear()
      this.lengthMasks.set(length, (mask = this.derive(`raw ${length}`)))
    }
    return this.mix(cid, mask)
  }

  /** The key of a tree node proven for a kind of place (a string: nodes are few). */
  node(cid: CidBytes, kind: 'full' | 'prefix' | 'last', level: number, geo: Geometry): string {
    const tag = `${kind} ${level} ${geo.chunkSize} ${geo.fanout}${kind === 'last' ? ` ${geo.size}` : ''}`
    let mask = this.placeMasks.get(tag)
    if (!mask) {
      if (this.placeMasks.size >= 1 << 12) this.placeMasks.clear()
      this.placeMasks.set(tag, (mask = this.derive(tag)))
    }
    return cidKey(this.mix(cid, mask))
  }
}

export function badNode(checkpoint: CidBytes, region: string, what: string): CkptError {
  return new CkptError('CKPT_BAD_NODE', `checkpoint ${cidToString(checkpoint)}, region ${region}: ${what}`, { checkpoint: cidToString(checkpoint), region })
}

/** A CID of the kind ckpt stores (CIDv1, raw or dag-cbor, BLAKE3-256), copied; else CKPT_BAD_CID naming the offset. */
export function ourCid(bytes: Uint8Array, offset: number, what: string): CidBytes {
  const ok = bytes.length === CID_LENGTH && bytes[0] === 0x01 && (bytes[1] === RAW || bytes[1] === DAG_CBOR) && bytes[2] === 0x1e && bytes[3] === 0x20
  if (ok) return copyOf(bytes)
  let desc = `${bytes.length} bytes`
  try {
    const c = CIDClass.decode(bytes)
    desc = `${c.toString()} (codec 0x${c.code.toString(16)}, hash 0x${c.multihash.code.toString(16)})`
  } catch {}
  throw new CkptError('CKPT_BAD_CID', `${what} ${desc} at bundle byte ${offset}: ckpt stores CIDv1 raw/dag-cbor blocks with BLAKE3-256 only`, { offset })
}

/**
 * Decoded tree nodes of the last two checkpoints an import proved: the next checkpoint compares with
 * them and stores its nodes as deltas against them (nodes it did not touch come from the store's
 * node cache). Two checkpoints' worth, whatever the bundle's size.
 */
export class RecentNodes {
  private current = new Map<string, NodeEntries>()
  private previous = new Map<string, NodeEntries>()

  /** A new checkpoint begins: the one before the last is forgotten. */
  rotate(): void {
    this.previous = this.current
    this.current = new Map()
  }

  get(cid: CidBytes): NodeEntries | undefined {
    const k = cidKey(cid)
    return this.current.get(k) ?? this.previous.get(k)
  }

  set(cid: CidBytes, e: NodeEntries): void {
    this.current.set(cidKey(cid), e)
  }
}
