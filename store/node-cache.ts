/**
 * The block store's cache of decoded tree nodes by CID, least recently used evicted first. It also
 * keeps intermediate versions rebuilt along a node-delta chain, not hashed yet: they serve as bases
 * (the node asked for is always hashed, so a wrong base cannot pass) and are hashed before being
 * returned themselves. Going back through a timeline then rebuilds each version once, not once per
 * chain that passes through it. Intermediate versions take at most half the cache, the oldest going
 * first: a walk of many leaves with long chains (a restore) must not evict the leaves it walked before.
 */
import { blake3Equals } from '../codecs/blake3.js'
import { cidKey, type CidBytes } from '../codecs/cid.js'
import { encodeNodeScratch, type NodeEntries } from '../codecs/tree-node.js'

let scratch = new Uint8Array(64 << 10)

/** Whether the node's dag-cbor encoding hashes to `cid` (encoded into reused memory, not an array per node). */
export function nodeHashes(e: NodeEntries, cid: CidBytes): boolean {
  const bytes = encodeNodeScratch(e, scratch)
  if (bytes.buffer !== scratch.buffer) scratch = new Uint8Array(bytes.length)
  return blake3Equals(bytes, cid, 4)
}

export class NodeCache {
  private readonly nodes = new Map<string, NodeEntries>()
  /** keys of `nodes` that are intermediate versions, not hashed yet (insertion order: oldest first) */
  private readonly unverified = new Set<string>()

  constructor(private max: number) {}

  /** A cached node proven to be `cid` (an intermediate version is hashed now; dropped if it does not match). */
  get(key: string, cid: CidBytes): NodeEntries | undefined {
    const hit = this.base(key)
    if (hit === undefined || !this.unverified.has(key)) return hit
    this.unverified.delete(key)
    if (nodeHashes(hit, cid)) return hit
    this.nodes.delete(key)
    return undefined
  }

  /** Any cached version, proven or not (a delta chain's base), moved to the young end. */
  base(key: string): NodeEntries | undefined {
    const hit = this.nodes.get(key)
    if (hit !== undefined) {
      this.nodes.delete(key)
      this.nodes.set(key, hit)
    }
    return hit
  }

  /** A node proven against its CID. */
  set(key: string, entries: NodeEntries): void {
    if (this.nodes.has(key)) {
      this.unverified.delete(key)
      return
    }
    if (this.nodes.size >= this.max) this.drop(this.nodes.keys().next().value!)
    this.nodes.set(key, entries)
  }

  /** A node its caller has just hashed (a tree node it stored whole): replaces any unproven version. */
  proven(cid: CidBytes, entries: NodeEntries): void {
    this.drop(cidKey(cid))
    this.set(cidKey(cid), entries)
  }

  /** An intermediate version of a delta chain, not hashed. */
  keep(key: string, entries: NodeEntries): void {
    if (this.nodes.has(key)) return
    if (this.unverified.size >= this.max >> 1) this.drop(this.unverified.values().next().value!)
    if (this.nodes.size >= this.max) this.drop(this.nodes.keys().next().value!)
    this.nodes.set(key, entries)
    this.unverified.add(key)
  }

  drop(key: string): void {
    this.nodes.delete(key)
    this.unverified.delete(key)
  }

  /** A new size (gc walks with a small cache); returns the previous one. */
  resize(entries: number): number {
    const was = this.max
    this.max = Math.max(16, entries)
    while (this.nodes.size > this.max) this.drop(this.nodes.keys().next().value!)
    return was
  }
}
