/**
 * The block store's cache of decoded tree nodes by CID, least recently used evicted first. It also
 * keeps intermediate versions rebuilt along a node-delta chain, not hashed yet: they serve as bases
 * (the node asked for is always hashed, so a wrong base cannot pass) and are hashed before being
 * returned themselves. Going back through a timeline then rebuilds each version once, not once per
 * chain that passes through it. Intermediate versions take at most half the cache, the oldest going
 * first: a walk of many leaves with long chains (a restore) must not evict the leaves it walked before.
 *
 * Its size is counted in units of 256 slots (~8.5 KiB decoded), not in nodes: a node of 1,024 slots
 * (the default fan-out) weighs 4, so the cache's memory bound is the same whatever the fan-out.
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

/** A node's weight in the cache: one unit per 256 slots begun (cached nodes are never modified, so it stays what it was). */
const weight = (e: NodeEntries) => Math.max(1, Math.ceil(e.count / 256))

export class NodeCache {
  private readonly nodes = new Map<string, NodeEntries>()
  /** keys of `nodes` that are intermediate versions, not hashed yet (insertion order: oldest first) */
  private readonly unverified = new Set<string>()
  /** the weights of `nodes`, and of its unverified ones */
  private units = 0
  private unverifiedUnits = 0

  /** max: the size in units of 256 slots (a cache of `max` nodes of fan-out 256) */
  constructor(private max: number) {}

  /** A cached node proven to be `cid` (an intermediate version is hashed now; dropped if it does not match). */
  get(key: string, cid: CidBytes): NodeEntries | undefined {
    const hit = this.base(key)
    if (hit === undefined || !this.unverified.has(key)) return hit
    this.unverified.delete(key)
    this.unverifiedUnits -= weight(hit)
    if (nodeHashes(hit, cid)) return hit
    this.drop(key)
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
    const had = this.nodes.get(key)
    if (had !== undefined) {
      if (this.unverified.delete(key)) this.unverifiedUnits -= weight(had)
      return
    }
    this.add(key, entries)
  }

  private add(key: string, entries: NodeEntries): void {
    const w = weight(entries)
    while (this.nodes.size > 0 && this.units + w > this.max) this.drop(this.nodes.keys().next().value!)
    this.nodes.set(key, entries)
    this.units += w
  }

  /** A node its caller has just hashed (a tree node it stored whole): replaces any unproven version. */
  proven(cid: CidBytes, entries: NodeEntries): void {
    this.drop(cidKey(cid))
    this.set(cidKey(cid), entries)
  }

  /** An intermediate version of a delta chain, not hashed. */
  keep(key: string, entries: NodeEntries): void {
    if (this.nodes.has(key)) return
    const w = weight(entries)
    while (this.unverified.size > 0 && this.unverifiedUnits + w > this.max >> 1) this.drop(this.unverified.values().next().value!)
    this.add(key, entries)
    this.unverified.add(key)
    this.unverifiedUnits += w
  }

  drop(key: string): void {
    const had = this.nodes.get(key)
    if (had === undefined) return
    const w = weight(had)
    this.nodes.delete(key)
    this.units -= w
    if (this.unverified.delete(key)) this.unverifiedUnits -= w
  }

  /** A new size (gc walks with a small cache); returns the previous one. */
  resize(entries: number): number {
    const was = this.max
    this.max = Math.max(16, entries)
    while (this.units > this.max) this.drop(this.nodes.keys().next().value!)
    return was
  }
}
