/**
 * A region's content as a Merkle tree over chunk CIDs (SPEC.md, "Tree nodes").
 * Level 0 is the chunks; a node at level L >= 1, index j, holds the links of level L-1 items
 * [j*F, min((j+1)*F, itemsAt(L-1))). The root is the single node at the top level. A hole (null) is an
 * all-zero chunk or an all-zero subtree. The shape depends only on size, chunk size and fan-out, so equal
 * contents give equal root CIDs whatever their history.
 *
 * The tree kept for a timeline's head is mutable: setChunk() changes slots (copy-on-write per node), and
 * commit() writes only the nodes on paths from changed chunks to the root, each stored as a delta
 * against its previous version where that is smaller, or, once that version's chain is at its depth
 * limit, against the node the chain starts from (SPEC.md, "Node deltas").
 */
import { blake3 } from '../codecs/blake3.js'
import { cidBytes, cidDigest, DAG_CBOR, RAW, type CidBytes } from '../codecs/cid.js'
import { AT_REST, compressBlock } from '../codecs/compress.js'
import { CkptError } from '../codecs/errors.js'
import { deltaBaseCid, encodeNodeDelta, encodeNodePatch } from '../codecs/node-delta.js'
import { emptyNode, encodedNodeLength, encodeNode, MAX_NODE_COUNT, type NodeEntries } from '../codecs/tree-node.js'
import { nodeHashes, type BlockStore } from '../store/index.js'
import type { LeafSet } from './pipeline/tasks.js'

/**
 * Fan-out of the regions a timeline starts (a manifest records each region's; a timeline keeps its head's).
 * 1,024 rather than 256: scattered writes touch a quarter as many leaves, so a checkpoint stores fewer
 * node entries (each costs an entry header, an index entry and a base CID besides its patches): workload
 * S 1.059 → 1.048 × the ideal, docs/performance.md.
 */
export const DEFAULT_FANOUT = 1024
/** Longest delta chain before a node is stored whole again (bounds a cold read to this many reads). */
export const MAX_DELTA_DEPTH = 32
/** The node-delta form this build writes (SPEC.md, "Node deltas"): 2 where it is smaller than form 1. */
export const NODE_DELTA_FORM = 2

export class Geometry {
  readonly chunks: number
  readonly height: number
  readonly lastChunkSize: number

  /**
   * Throws CKPT_BAD_MANIFEST (before any loop) unless size is an integer from 1 to 2^53-1, chunkSize
   * an integer from 1 to 2^31 and fanout an integer from 2 to 65,536: a shape read from a bundle or a
   * damaged manifest can never make the height loop run forever (fan-out 1) or overflow. Manifests
   * are checked more narrowly already (codecs/manifest.ts: power-of-two chunks of 512 B to 1 MiB).
   */
  constructor(
    readonly size: number,
    readonly chunkSize: number,
    readonly fanout = DEFAULT_FANOUT,
  ) {
    if (
      !Number.isSafeInteger(size) || size < 1 ||
      !Number.isSafeInteger(chunkSize) || chunkSize < 1 || chunkSize > 2 ** 31 ||
      !Number.isInteger(fanout) || fanout < 2 || fanout > MAX_NODE_COUNT
    ) {
      throw new CkptError('CKPT_BAD_MANIFEST', `impossible region shape: size ${size}, chunk size ${chunkSize}, fan-out ${fanout}`, { size, chunkSize, fanout })
    }
    this.chunks = Math.ceil(size / chunkSize)
    this.lastChunkSize = size - (this.chunks - 1) * chunkSize
    let h = 1
    for (let n = Math.ceil(this.chunks / fanout); n > 1; n = Math.ceil(n / fanout)) h++
    this.height = h
  }

  /** number of items (chunks at level 0, nodes above) at a level */
  itemsAt(level: number): number {
    let n = this.chunks
    for (let l = 0; l < level; l++) n = Math.ceil(n / this.fanout)
    return n
  }

  /** entries of node (level, index) */
  nodeCount(level: number, index: number): number {
    return Math.min(this.fanout, this.itemsAt(level - 1) - index * this.fanout)
  }

  chunkLength(i: number): number {
    return i === this.chunks - 1 ? this.lastChunkSize : this.chunkSize
  }
}

interface NodeState {
  entries: NodeEntries
  /** CID this node had when loaded or last committed (null: was a hole) */
  cid: CidBytes | null
  /** slots changed since `cid` (the delta against it lists just these) */
  changed?: Set<number>
  depth?: number
  /** the whole-stored node `cid`'s delta chain starts from, when known (a skip base at the depth limit) */
  start?: CidBytes
  dirty: boolean
  /** hash of the current entries computed elsewhere (a worker, with the chunks); null: all holes */
  preset?: Uint8Array | null
  /**
   * with `preset`: the node's delta against `cid`, made elsewhere with the hash (see leafSet), and the
   * depth of `cid`'s chain it was planned on
   */
  presetDelta?: Uint8Array
  plannedDepth?: number
  /** with `presetDelta`: the node's encoded size (the entry's raw length) */
  presetSize?: number
}

export interface TreeCommitStats {
  nodesWritten: number
  nodeBytes: number
}

export class RegionTree {
  private readonly levels: Map<number, NodeState>[] = []
  private rootCid: CidBytes | null
  /** every chunk's link as a leaf file says (seedChunks), for leaves not yet read */
  private seed: { codecs: Uint8Array; digests: Uint8Array } | undefined
  /** leaves taken from the seed so far */
  seededLeaves = 0
  /** per chunk: the chain depth of the block in its slot as this tree stored it (0 whole), 255 unknown */
  private depths: Uint8Array | undefined

  constructor(
    private readonly blocks: BlockStore,
    readonly geo: Geometry,
    root: CidBytes | null,
  ) {
    this.rootCid = root
    for (let l = 0; l <= geo.height; l++) this.levels.push(new Map())
  }

  get root(): CidBytes | null {
    return this.rootCid
  }

  private node(level: number, index: number): NodeState {
    const cached = this.levels[level]!.get(index)
    if (cached) return cached
    let cid: CidBytes | null
    if (level === this.geo.height) cid = this.rootCid
    else {
      const parent = this.node(level + 1, Math.floor(index / this.geo.fanout))
      const slot = index % this.geo.fanout
      cid = parent.entries.codecs[slot] ? cidBytes(DAG_CBOR, parent.entries.digests.subarray(slot * 32, slot * 32 + 32)) : null
    }
    const count = this.geo.nodeCount(level, index)
    let entries: NodeEntries
    const seeded = cid && level === 1 && this.seed ? this.seeded(index, count, cid) : undefined
    if (seeded) entries = seeded
    else if (cid) {
      // a private copy: the tree mutates its head nodes, the store's cache must stay as stored
      const e = this.blocks.getNode(cid)
      entries = { count: e.count, codecs: new Uint8Array(e.codecs), digests: new Uint8Array(e.digests) }
      if (entries.count !== count) {
        throw new CkptError('CKPT_BAD_NODE', `tree node at level ${level} has ${entries.count} entries, expected ${count}`, { level, index })
      }
    } else entries = emptyNode(count)
    const st: NodeState = { entries, cid, dirty: false }
    this.levels[level]!.set(index, st)
    return st
  }

  /**
   * Leaves for this tree from a table of every chunk's link (a leaf file, §18.1): a leaf read later
   * is taken from it when the entries hash to the CID its parent holds, and read from the store
   * otherwise. Saves rebuilding each leaf from its delta chain; a wrong table costs only the hashing.
   */
  seedChunks(table: { codecs: Uint8Array; digests: Uint8Array }): void {
    if (table.codecs.length === this.geo.itemsAt(0) && table.digests.length === table.codecs.length * 32) this.seed = table
  }

  private seeded(index: number, count: number, cid: CidBytes): NodeEntries | undefined {
    const from = index * this.geo.fanout
    // copies (new Uint8Array, never slice(): on a Buffer that is a view, and the tree mutates its leaves)
    const entries = { count, codecs: new Uint8Array(this.seed!.codecs.subarray(from, from + count)), digests: new Uint8Array(this.seed!.digests.subarray(from * 32, (from + count) * 32)) }
    if (!nodeHashes(entries, cid)) return undefined
    this.seededLeaves++
    return entries
  }

  /**
   * Every chunk's link (0 or its codec, and its digest) as this tree holds it, for a leaf file; undefined
   * when a leaf that is not a hole has not been read (nothing is read for it here).
   */
  chunkTable(): { codecs: Uint8Array; digests: Uint8Array } | undefined {
    const F = this.geo.fanout
    const n = this.geo.itemsAt(0)
    const codecs = new Uint8Array(n)
    const digests = new Uint8Array(n * 32)
    for (let j = 0; j * F < n; j++) {
      const st = this.levels[1]!.get(j)
      if (st) {
        codecs.set(st.entries.codecs.subarray(0, st.entries.count), j * F)
        digests.set(st.entries.digests.subarray(0, st.entries.count * 32), j * F * 32)
        continue
      }
      // not read: a hole if its parent (in memory) says so, else unknown here
      if (this.geo.height === 1) return undefined
      const parent = this.levels[2]!.get(Math.floor(j / F))
      if (!parent || parent.entries.codecs[j % F]) return undefined
    }
    return { codecs, digests }
  }

  /** The chunk's digest (32 bytes, a view) or undefined for a hole. */
  chunkDigest(i: number): Uint8Array | undefined {
    const n = this.node(1, Math.floor(i / this.geo.fanout))
    const slot = i % this.geo.fanout
    return n.entries.codecs[slot] ? n.entries.digests.subarray(slot * 32, slot * 32 + 32) : undefined
  }

  /**
   * Copies of the leaves (level-1 nodes) numbered [from, to) that `indexes` (sorted) touch, for a worker
   * to update with those chunks and hash (see presetLeaves); with `deltas`, each with the base its delta
   * is to be made against. Its arrays are views of one block: `alloc`'s (reused shared memory, the
   * caller's to release: releaseSlab(set.counts)) or a new one.
   */
  leafSet(indexes: Uint32Array, from: number, to: number, deltas = false, alloc?: (bytes: number) => Uint8Array): LeafSet | undefined {
    const F = this.geo.fanout
    const numbers: number[] = []
    for (let k = 0; k < indexes.length; k++) {
      const leaf = Math.floor(indexes[k]! / F)
      if (leaf >= from && leaf < to && numbers.at(-1) !== leaf) numbers.push(leaf)
    }
    if (numbers.length === 0) return undefined
    const L = numbers.length
    // counts first (4-byte aligned), then codecs, digests and bases; slots past a leaf's count are never read
    const size = 4 * L + L * F + L * F * 32 + (deltas ? L * 36 : 0)
    const block = alloc ? alloc(size) : new Uint8Array(size)
    const buf = block.buffer
    let at = block.byteOffset
    const counts = new Uint32Array(buf, at, L)
    at += 4 * L
    const set: LeafSet = { fanout: F, numbers: Uint32Array.from(numbers), counts, codecs: new Uint8Array(buf, at, L * F), digests: new Uint8Array(buf, at + L * F, L * F * 32) }
    at += L * F + L * F * 32
    if (deltas) {
      set.bases = new Uint8Array(buf, at, L * 36)
      set.deltaForm = NODE_DELTA_FORM
    }
    numbers.forEach((leaf, j) => {
      const n = this.node(1, leaf)
      const e = n.entries
      set.counts[j] = e.count
      set.codecs.set(e.codecs, j * F)
      set.digests.set(e.digests, j * F * 32)
      // the delta writeNode would make, planned now: against the stored version, while its chain is short enough
      n.plannedDepth = undefined
      if (!set.bases) return
      set.bases.fill(0, j * 36, j * 36 + 36)
      if (n.cid && !n.dirty) {
        const depth = n.depth ?? this.blocks.locate(n.cid)?.depth ?? MAX_DELTA_DEPTH
        if (depth < depthLimit(n.cid)) {
          set.bases.set(n.cid, j * 36)
          n.plannedDepth = depth
        }
      }
    })
    return set
  }

  /**
   * Records leaf hashes a worker computed from leafSet() copies plus the same chunk changes this tree
   * has since received through setChunk(); any later change to such a leaf drops its preset hash.
   */
  presetLeaves(numbers: Uint32Array, hashes: Uint8Array, live: Uint8Array, deltas?: { lengths: Uint32Array; bytes: Uint8Array; sizes: Uint32Array }): void {
    let at = 0
    for (let j = 0; j < numbers.length; j++) {
      const n = this.node(1, numbers[j]!)
      const len = deltas ? deltas.lengths[j]! : 0
      if (n.dirty) {
        n.preset = live[j] ? hashes.slice(j * 32, j * 32 + 32) : null
        if (len > 0 && n.preset && n.plannedDepth !== undefined) {
          n.presetDelta = deltas!.bytes.subarray(at, at + len)
          n.presetSize = deltas!.sizes[j]!
        }
      }
      n.plannedDepth = n.presetDelta ? n.plannedDepth : undefined
      at += len
    }
  }

  /** Sets chunk i to a raw block digest, or to a hole with undefined. Returns whether it changed. */
  setChunk(i: number, digest: Uint8Array | undefined): boolean {
    const changed = this.setSlot(1, Math.floor(i / this.geo.fanout), i % this.geo.fanout, RAW, digest)
    if (changed && this.depths) this.depths[i] = 255
    return changed
  }

  /** The chunk delta chain depth of chunk i's block (0: whole) as this tree stored it; 255 unknown. */
  chunkDepth(i: number): number {
    return this.depths ? this.depths[i]! : 255
  }

  setChunkDepth(i: number, depth: number): void {
    ;(this.depths ??= new Uint8Array(this.geo.chunks).fill(255))[i] = depth
  }

  private setSlot(level: number, index: number, slot: number, codec: number, digest: Uint8Array | undefined): boolean {
    const n = this.node(level, index)
    const e = n.entries
    if (digest === undefined) {
      if (e.codecs[slot] === 0) return false
    } else if (e.codecs[slot] === codec) {
      let same = true
      for (let k = 0; k < 32; k++) if (e.digests[slot * 32 + k] !== digest[k]) { same = false; break }
      if (same) return false
    }
    if (!n.dirty) {
      n.changed = new Set()
      n.dirty = true
    }
    n.preset = undefined
    n.presetDelta = undefined
    n.changed!.add(slot)
    if (digest === undefined) {
      e.codecs[slot] = 0
      e.digests.fill(0, slot * 32, slot * 32 + 32)
    } else {
      e.codecs[slot] = codec
      e.digests.set(digest, slot * 32)
    }
    return true
  }

  /**
   * Writes every modified node bottom-up and returns the new root (null: the region is all zero).
   * `hashNodes`, when given, encodes and hashes a level's nodes elsewhere (the worker pool) in one
   * call; the writes (deltas against each node's previous version) stay here.
   */
  async commit(hashNodes?: (nodes: NodeEntries[]) => Promise<Uint8Array[]>): Promise<TreeCommitStats> {
    const stats = { nodesWritten: 0, nodeBytes: 0 }
    for (let level = 1; level <= this.geo.height; level++) {
      const dirty: [number, NodeState][] = []
      for (const [index, n] of this.levels[level]!) if (n.dirty) dirty.push([index, n])
      const hashOf = new Map<NodeState, Uint8Array>()
      const live = dirty.filter(([, n]) => {
        if (n.preset !== undefined) {
          if (n.preset) hashOf.set(n, n.preset)
          return false
        }
        for (let k = 0; k < n.entries.count; k++) if (n.entries.codecs[k]) return true
        return false
      })
      // small levels are not worth a round trip
      const hashes = hashNodes && live.length >= 16 ? await hashNodes(live.map(([, n]) => n.entries)) : undefined
      live.forEach(([, n], k) => hashOf.set(n, hashes ? hashes[k]! : blake3(encodeNode(n.entries))))
      for (const [index, n] of dirty) {
        let newCid: CidBytes | null = null
        const h = hashOf.get(n)
        if (h) {
          newCid = cidBytes(DAG_CBOR, h)
          if (!this.blocks.has(newCid)) {
            const written = this.writeNode(newCid, n)
            stats.nodesWritten++
            stats.nodeBytes += written
          }
        }
        if (level === this.geo.height) this.rootCid = newCid
        else this.setSlot(level + 1, Math.floor(index / this.geo.fanout), index % this.geo.fanout, DAG_CBOR, newCid ? cidDigest(newCid) : undefined)
        n.cid = newCid
        n.changed = undefined
        n.dirty = false
        n.preset = undefined
        n.presetDelta = undefined
        n.plannedDepth = undefined
      }
    }
    return stats
  }

  private writeNode(cid: CidBytes, n: NodeState): number {
    if (n.presetDelta && n.plannedDepth !== undefined && n.cid) {
      // made with the leaf's hash by the worker: what storeNode would write (a delta of the changed slots)
      const depth = n.plannedDepth + 1
      this.blocks.put(cid, AT_REST.nodeDelta, n.presetDelta, n.presetSize!, { depth })
      n.start = n.plannedDepth === 0 ? n.cid : n.start
      n.depth = depth
      return n.presetDelta.length
    }
    const base = n.cid && n.changed ? { cid: n.cid, depth: n.depth, slots: Uint32Array.from(n.changed).sort(), start: n.start } : undefined
    const r = storeNode(this.blocks, cid, n.entries, base)
    // a node stored whole starts the chains of its next versions, which read it again at their depth
    // limit (a delta against it): kept decoded rather than read back, decompressed and re-hashed
    if (r.depth === 0) this.blocks.nodeCache.proven(cid, { count: n.entries.count, codecs: new Uint8Array(n.entries.codecs), digests: new Uint8Array(n.entries.digests) })
    n.depth = r.depth
    n.start = r.start
    return r.stored
  }
}

/**
 * Offers the block store the leaves of the tree `root` as a table of every chunk's link says they are
 * (a leaf file, §18.1), for a walk that will read them (a restore): each is hashed against its CID
 * when first read (BlockStore.offerNode), so a wrong table costs only the hashing. Reads the levels
 * above the leaves (one node for a region of up to 256 leaves).
 */
export function offerLeaves(blocks: BlockStore, geo: Geometry, root: CidBytes | null, table: { codecs: Uint8Array; digests: Uint8Array }): void {
  if (!root || table.codecs.length !== geo.itemsAt(0) || table.digests.length !== table.codecs.length * 32) return
  const F = geo.fanout
  const offer = (j: number, cid: CidBytes) => {
    const count = geo.nodeCount(1, j)
    const from = j * F
    // copies, never views of the table: the cache's entries must not share memory with anything
    blocks.offerNode(cid, { count, codecs: new Uint8Array(table.codecs.subarray(from, from + count)), digests: new Uint8Array(table.digests.subarray(from * 32, (from + count) * 32)) })
  }
  const visit = (level: number, index: number, cid: CidBytes) => {
    if (level === 1) return offer(index, cid)
    const e = blocks.getNode(cid)
    for (let s = 0; s < e.count; s++) if (e.codecs[s]) visit(level - 1, index * F + s, cidBytes(DAG_CBOR, e.digests.subarray(s * 32, s * 32 + 32)))
  }
  visit(geo.height, 0, root)
}

/**
 * Stores a tree node: as a delta against `base` (its previous version, already stored) where that is
 * under half the node's size and the base's chain is short enough, else whole (zstd). `base.slots`
 * lists the changed slots when the caller tracked them; otherwise the two nodes are compared. When
 * the base's chain is at its limit, a delta of the node the chain starts from (`base.start` when the
 * caller tracked it, else found by walking the chain) is tried first (see chainStart).
 * Returns the stored payload size, the entry's delta depth and the node its chain starts from.
 */
export function storeNode(
  blocks: BlockStore,
  cid: CidBytes,
  entries: NodeEntries,
  base?: { cid: CidBytes; depth?: number; slots?: ArrayLike<number>; entries?: NodeEntries; start?: CidBytes },
): { stored: number; depth: number; start?: CidBytes } {
  const size = encodedNodeLength(entries)
  if (base) {
    const baseDepth = base.depth ?? blocks.locate(base.cid)?.depth ?? MAX_DELTA_DEPTH
    // nodes written together would all reach the limit together (a burst of whole-node writes):
    // a limit from 25 to 32 picked by the base's digest spreads them over eight checkpoints
    if (baseDepth < depthLimit(base.cid)) {
      const delta = base.slots
        ? encodeNodePatch(base.cid, entries, base.slots, size >> 1, NODE_DELTA_FORM)
        : encodeNodeDelta(base.cid, base.entries ?? blocks.getNode(base.cid), entries, size >> 1, NODE_DELTA_FORM)
      if (delta) {
        blocks.put(cid, AT_REST.nodeDelta, delta, size, { depth: baseDepth + 1 })
        return { stored: delta.length, depth: baseDepth + 1, start: baseDepth === 0 ? base.cid : base.start }
      }
    } else {
      const start = base.start && isWhole(blocks, base.start) ? base.start : chainStart(blocks, base.cid)
      const delta = start && skipDelta(blocks, start, entries, size)
      if (delta) {
        blocks.put(cid, AT_REST.nodeDelta, delta, size, { depth: 1 })
        return { stored: delta.length, depth: 1, start }
      }
    }
  }
  const bytes = encodeNode(entries)
  const c = compressBlock(blocks.compressor, bytes)
  blocks.put(cid, c.code, c.bytes, bytes.length)
  return { stored: c.bytes.length, depth: 0, start: cid }
}

/** Whether the store holds the node whole (a gc may have stored it anew, or dropped it, since it was tracked). */
function isWhole(blocks: BlockStore, cid: CidBytes): boolean {
  const loc = blocks.locate(cid)
  return loc !== undefined && loc.codec !== AT_REST.nodeDelta
}

function skipDelta(blocks: BlockStore, start: CidBytes, entries: NodeEntries, size: number): Uint8Array | undefined {
  try {
    return encodeNodeDelta(start, blocks.getNode(start), entries, size >> 1, NODE_DELTA_FORM)
  } catch {
    return undefined // a start that does not read back (damaged): the node is stored whole
  }
}

function depthLimit(base: CidBytes): number {
  return MAX_DELTA_DEPTH - (base[4]! & 7)
}

/**
 * The node a delta chain starts from (stored whole), or undefined when it cannot be told here. A node
 * whose previous version's chain reached its depth limit is stored as a delta of that node (depth 1)
 * where that is under half its size, instead of whole: a node that changes in the same few places
 * stays a short chain instead of being stored whole every 25 to 32 versions.
 */
function chainStart(blocks: BlockStore, cid: CidBytes): CidBytes | undefined {
  let at = cid
  try {
    for (let hops = 0; hops <= MAX_DELTA_DEPTH; hops++) {
      const loc = blocks.locate(at)
      if (!loc) return undefined
      if (loc.codec !== AT_REST.nodeDelta) return hops === 0 ? undefined : at
      at = deltaBaseCid(blocks.readStored(at).payload)
    }
  } catch {
    // a chain that cannot be read here (a lazily pulled one on a remote): the node is stored whole
  }
  return undefined
}
