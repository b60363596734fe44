// Bundles as models, for the import fuzzer (test/src/import-fuzz.test.ts, fuzz-import-worker.mjs) and
// the strict-import regression tests. Plain JS with no dependency on the project's code (so a worker
// thread loads it as it is): blocks are built from @ipld/dag-cbor, multiformats and @noble/hashes'
// BLAKE3, exactly as SPEC.md §3 and §9 describe them.
//
// A model is a graph of immutable entities:
//   chunk(bytes)            a raw block
//   node(slots)             a tree node: slots are entities, null (a hole) or lit(x) (any value as it is)
//   value(v)                any dag-cbor value as a block (entities inside become links)
//   manifest(fields)        a manifest: fields as written (entities inside become links; a version-1
//                           `parent` too, a version-2 `parentCid: cidOf(m)` the bytes of m's CID; the
//                           parent is history, not content, so its blocks are not emitted)
// encodeCar() turns a list of root manifests into CAR bytes, computing every CID from the bytes it
// links (so a changed chunk changes its leaf, the leaf its parents, ... and the manifest), emitting
// each block once in post-order. A mutation builds changed copies of the entities on one path and
// shares the rest, so CIDs are re-computed where the mutation should pass the hash check, and BLAKE3
// runs only over what changed (CIDs are cached per entity).
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { blake3 as nobleBlake3 } from '@noble/hashes/blake3.js'
import { createHash } from 'node:crypto'
import { createRequire } from 'node:module'

// the native BLAKE3 when it loads (noble's is ~30x slower), as the project itself prefers it
const blake3 = (() => {
  try {
    const fn = createRequire(import.meta.url)('@napi-rs/blake-hash').blake3
    if (typeof fn === 'function') return (data) => new Uint8Array(fn(data))
  } catch {}
  return nobleBlake3
})()

export const RAW = 0x55
export const DAG_CBOR = 0x71

export function cidBytes(codec, digest) {
  const c = new Uint8Array(36)
  c.set([0x01, codec, 0x1e, 0x20])
  c.set(digest.subarray(0, 32), 4)
  return c
}

export function keyOf(cid) {
  return Buffer.from(cid).toString('latin1')
}

/** A CID object for a 36-byte binary CID. */
export function cidObject(bytes) {
  return CID.decode(bytes)
}

/** A CIDv1 with a SHA-256 multihash (a CID ckpt does not store). */
export function sha256Cid(codec, data) {
  return CID.createV1(codec, Digest.create(0x12, createHash('sha256').update(data).digest()))
}

export const chunk = (bytes) => ({ t: 'raw', bytes })
export const node = (slots) => ({ t: 'node', slots })
export const value = (v) => ({ t: 'value', v })
export const manifest = (f) => ({ t: 'manifest', f })
/** any value, written as it is (a CID object, bytes, a number...) */
export const lit = (x) => ({ lit: x })
/** the 36 bytes of an entity's CID, as a byte string (not a link): a version-2 manifest's parentCid */
export const cidOf = (e) => ({ cidOf: e })

const blocks = new WeakMap()

function isEntity(x) {
  return x !== null && typeof x === 'object' && typeof x.t === 'string' && !(x instanceof Uint8Array) && !CID.asCID(x)
}

function isLit(x) {
  return x !== null && typeof x === 'object' && Object.hasOwn(x, 'lit') && Object.keys(x).length === 1
}

function isCidOf(x) {
  return x !== null && typeof x === 'object' && Object.hasOwn(x, 'cidOf') && Object.keys(x).length === 1
}

/** The manifest entity a manifest's fields name as parent (version 1 `parent`, version 2 `parentCid`), if any. */
function parentOf(f) {
  const p = isCidOf(f.parentCid) ? f.parentCid.cidOf : f.parent
  return p && isEntity(p) && p.t === 'manifest' ? p : undefined
}

/** The dag-cbor data model value of a field: entities become CID links, lit() unwraps. */
function resolve(x) {
  if (x === null || typeof x !== 'object') return x
  if (isLit(x)) return x.lit
  if (isCidOf(x)) return Uint8Array.from(blockOf(x.cidOf).cid)
  if (isEntity(x)) return CID.decode(blockOf(x).cid)
  if (x instanceof Uint8Array || CID.asCID(x)) return x
  if (Array.isArray(x)) return x.map(resolve)
  const o = {}
  // defineProperty: a "__proto__" key is a key like any other here
  for (const k of Object.keys(x)) Object.defineProperty(o, k, { value: resolve(x[k]), enumerable: true, writable: true, configurable: true })
  return o
}

/** { cid, bytes } of an entity (cached: entities never change). */
export function blockOf(e) {
  let b = blocks.get(e)
  if (b) return b
  let bytes
  let codec = DAG_CBOR
  if (e.t === 'raw') {
    bytes = e.bytes
    codec = RAW
  } else if (e.t === 'node') bytes = dagCbor.encode(e.slots.map(resolve))
  else if (e.t === 'value') bytes = dagCbor.encode(resolve(e.v))
  else if (e.t === 'manifest') bytes = dagCbor.encode(resolve(e.f))
  else throw new Error(`not an entity: ${e.t}`)
  b = { cid: cidBytes(codec, blake3(bytes)), bytes }
  blocks.set(e, b)
  return b
}

/** Entities an entity links as content (a manifest's parent is history: not followed). */
export function childrenOf(e) {
  const out = []
  const scan = (x) => {
    if (x === null || typeof x !== 'object' || isLit(x) || isCidOf(x) || x instanceof Uint8Array || CID.asCID(x)) return
    if (isEntity(x)) {
      out.push(x)
      return
    }
    if (Array.isArray(x)) x.forEach(scan)
    else for (const k of Object.keys(x)) scan(x[k])
  }
  if (e.t === 'node') e.slots.forEach(scan)
  else if (e.t === 'value') scan(e.v)
  else if (e.t === 'manifest') {
    for (const k of Object.keys(e.f)) if (k !== 'parent' && k !== 'parentCid') scan(e.f[k])
  }
  return out
}

/** Every block key reachable from these manifests (what a receiver of them has). */
export function reachable(roots) {
  const seen = new Set()
  const visit = (e) => {
    const k = keyOf(blockOf(e).cid)
    if (seen.has(k)) return
    seen.add(k)
    for (const c of childrenOf(e)) visit(c)
  }
  roots.forEach(visit)
  return seen
}

/** Sections ({ cid, block }) of these manifests' DAGs in post-order, each block once, `omit` left out. */
export function sectionsOf(roots, omit = new Set()) {
  const out = []
  const seen = new Set()
  const visit = (e) => {
    const b = blockOf(e)
    const k = keyOf(b.cid)
    if (seen.has(k)) return
    seen.add(k)
    for (const c of childrenOf(e)) visit(c)
    if (!omit.has(k)) out.push({ cid: b.cid, block: b.bytes, entity: e })
  }
  roots.forEach(visit)
  return out
}

export function varint(n) {
  const out = []
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80)
    n = Math.floor(n / 128)
  }
  out.push(n)
  return Uint8Array.from(out)
}

/** The CAR v1 header with its length prefix; `roots` are CID objects or any values. */
export function carHeader(roots, version = 1) {
  const body = dagCbor.encode({ roots, version })
  return Buffer.concat([varint(body.length), body])
}

export function carSection(cid, block) {
  return Buffer.concat([varint(cid.length + block.length), cid, block])
}

/** CAR bytes: a header naming `roots` (CID objects) and the sections as they are. */
export function carOf(roots, sections) {
  return Buffer.concat([carHeader(roots), ...sections.map((s) => carSection(s.cid, s.block))])
}

/** A CAR of these manifests: roots in this order, every block they reach once, in post-order. */
export function encodeCar(roots, omit) {
  return carOf(
    roots.map((m) => CID.decode(blockOf(m).cid)),
    sectionsOf(roots, omit),
  )
}

// --------------------------------------------------------------------------------- the trees

/** The nodes of a region tree over chunk entities (null: holes), as ckpt shapes it (SPEC.md §3.1). */
export function tree(chunks, fanout) {
  let level = chunks
  do {
    const up = []
    for (let j = 0; j < level.length; j += fanout) {
      const slots = level.slice(j, j + fanout)
      up.push(slots.every((s) => s === null) ? null : node(slots))
    }
    level = up
  } while (level.length > 1)
  return level[0]
}

/** The bytes a region of this shape holds (holes as zeros), from its chunk entities. */
export function regionBytes(chunks, size, chunkSize) {
  const out = Buffer.alloc(size)
  chunks.forEach((c, i) => {
    if (c) out.set(c.bytes, i * chunkSize)
  })
  return out
}

// --------------------------------------------------------------------------------- scenarios

export const LINEAGE = '0123456789abcdef0123456789abcdef'
export const OTHER_LINEAGE = 'fedcba9876543210fedcba9876543210'
/** 70 pages and a short last chunk of 1,000 bytes, fan-out 8: leaves, a level of 2 nodes, a root */
export const RAM = { size: 70 * 4096 + 1000, chunk: 4096, fanout: 8 }
/** four 64 KiB clusters under one leaf (fan-out 256, as ckpt writes) */
export const DISK = { size: 4 * 65536, chunk: 65536, fanout: 256 }
/** 40 pages and 123 bytes, fan-out 256, as ckpt writes: one leaf of 41 slots */
export const MEM = { size: 40 * 4096 + 123, chunk: 4096, fanout: 256 }

/**
 * The valid bundles the fuzzer mutates, all from `rng` (same seed, same bytes):
 * - `run`: timeline fz/run, four checkpoints (parent chain) of regions ram (4 KiB pages, a short last
 *   chunk, a three-level tree) and disk (64 KiB clusters), blob cpu in some, labels; manifest version 2
 *   (the parent as parentCid bytes), as ckpt writes;
 * - `other`: timeline other, one checkpoint of a 256-fan-out region (one leaf) with a short last chunk;
 *   manifest version 1 (the parent a link), as older stores hold.
 * Bundles: `full` (all five), `single` (one checkpoint), `thin` (run 2..3 without what run 0..1
 * reach; `base` is the bundle of run 0..1 to import first).
 */
export function scenarios(rng) {
  const pages = Array.from({ length: 10 }, () => chunk(rng.bytes(4096)))
  const lasts = Array.from({ length: 3 }, () => chunk(rng.bytes(1000)))
  const clusters = Array.from({ length: 3 }, () => chunk(rng.bytes(65536)))
  const blobParts = [chunk(rng.bytes(700)), chunk(rng.bytes(1500)), chunk(rng.bytes(300)), chunk(rng.bytes(2000))]
  const memLast = chunk(rng.bytes(123))

  const ramChunks = Array.from({ length: 71 }, (_, i) => (i === 70 ? lasts[0] : rng.chance(0.35) ? null : rng.pick(pages)))
  const diskChunks = [clusters[0], null, clusters[1], null]
  const states = []
  let ram = ramChunks
  let disk = diskChunks
  for (let k = 0; k < 4; k++) {
    if (k > 0) {
      ram = ram.slice()
      for (let n = 0; n < 3; n++) {
        const i = rng.int(0, 70)
        ram[i] = rng.chance(0.3) ? null : rng.pick(pages)
      }
      if (k === 3) ram[70] = lasts[1]
      if (k === 2) {
        disk = disk.slice()
        disk[1] = clusters[2]
      }
    }
    states.push({ ram, disk })
  }
  const blobs = [
    { cpu: { size: 2500, chunks: [[blobParts[0], 700], [blobParts[1], 1500], [blobParts[2], 300]] } },
    {},
    { cpu: { size: 3500, chunks: [[blobParts[1], 1500], [blobParts[3], 2000]] } },
    { cpu: { size: 700, chunks: [[blobParts[0], 700]] }, log: { size: 0, chunks: [] } },
  ]
  const run = []
  for (let k = 0; k < 4; k++) {
    run.push(
      manifest({
        v: 2,
        timeline: 'fz/run',
        lineage: LINEAGE,
        vtime: 1000 * (k + 1),
        wall: 1_700_000_000_000 + k,
        parentCid: k === 0 ? null : cidOf(run[k - 1]),
        meta: k % 2 === 0 ? { label: `step ${k}` } : {},
        regions: {
          ram: { size: RAM.size, chunk: RAM.chunk, fanout: RAM.fanout, root: tree(states[k].ram, RAM.fanout) },
          disk: { size: DISK.size, chunk: DISK.chunk, fanout: DISK.fanout, root: tree(states[k].disk, DISK.fanout) },
        },
        blobs: blobs[k],
      }),
    )
  }
  const memChunks = Array.from({ length: 41 }, (_, i) => (i === 40 ? memLast : i % 7 === 5 ? rng.pick(pages) : null))
  const other = manifest({
    v: 1,
    timeline: 'other',
    lineage: OTHER_LINEAGE,
    vtime: 7,
    wall: 1_600_000_000_000,
    parent: null,
    meta: { label: 'other' },
    regions: { mem: { size: MEM.size, chunk: MEM.chunk, fanout: MEM.fanout, root: tree(memChunks, MEM.fanout) } },
    blobs: {},
  })
  const expected = new Map()
  run.forEach((m, k) => {
    expected.set(keyOf(blockOf(m).cid), {
      ram: regionBytes(states[k].ram, RAM.size, RAM.chunk),
      disk: regionBytes(states[k].disk, DISK.size, DISK.chunk),
    })
  })
  expected.set(keyOf(blockOf(other).cid), { mem: regionBytes(memChunks, MEM.size, MEM.chunk) })
  return {
    run,
    other,
    pages,
    lasts,
    clusters,
    blobParts,
    expected,
    bundles: {
      full: { roots: [...run, other] },
      single: { roots: [run[2]] },
      thin: { roots: [run[2], run[3]], base: [run[0], run[1]] },
    },
  }
}

// --------------------------------------------------------------------------------- copy-on-write

/** A copy of a manifest's fields, one level deep in regions, blobs and meta (entities shared). */
export function cloneFields(f) {
  const c = { ...f }
  if (f.regions && typeof f.regions === 'object' && !isLit(f.regions)) {
    c.regions = {}
    for (const k of Object.keys(f.regions)) {
      const r = f.regions[k]
      c.regions[k] = r && typeof r === 'object' && !isEntity(r) && !isLit(r) ? { ...r } : r
    }
  }
  if (f.blobs && typeof f.blobs === 'object' && !isLit(f.blobs)) {
    c.blobs = {}
    for (const k of Object.keys(f.blobs)) {
      const b = f.blobs[k]
      if (b && typeof b === 'object' && !isEntity(b) && !isLit(b) && !Array.isArray(b)) {
        c.blobs[k] = { ...b }
        if (Array.isArray(b.chunks)) c.blobs[k].chunks = b.chunks.map((x) => (Array.isArray(x) ? x.slice() : x))
      } else c.blobs[k] = b
    }
  }
  if (f.meta && typeof f.meta === 'object' && !isLit(f.meta)) c.meta = { ...f.meta }
  return c
}

/**
 * Roots with manifest `old` replaced by `next`; every manifest whose parent chain leads to a replaced
 * one is rebuilt with the new parent (its CID changes with its parent's).
 */
export function replaceManifest(roots, old, next) {
  const swapped = new Map([[old, next]])
  const fix = (m) => {
    if (swapped.has(m)) return swapped.get(m)
    if (m.t !== 'manifest') return m
    const p = parentOf(m.f)
    if (p) {
      const np = fix(p)
      if (np !== p) {
        const n = manifest(isCidOf(m.f.parentCid) ? { ...m.f, parentCid: cidOf(np) } : { ...m.f, parent: np })
        swapped.set(m, n)
        return n
      }
    }
    return m
  }
  return roots.map(fix)
}

/** Entities with their paths: every node of a region tree, as [path of slot numbers, node, level]. */
export function nodesOf(root, height) {
  const out = []
  const walk = (e, path, level) => {
    if (!e || e.t !== 'node') return
    out.push({ path, node: e, level })
    if (level > 1) e.slots.forEach((s, i) => walk(s, [...path, i], level - 1))
  }
  walk(root, [], height)
  return out
}

/** The tree with the entity at `path` (slot numbers from the root) replaced by `next` (copies up the path). */
export function replaceAt(root, path, next) {
  if (path.length === 0) return next
  const [s, ...rest] = path
  const slots = root.slots.slice()
  slots[s] = replaceAt(root.slots[s], rest, next)
  return node(slots)
}

export function heightOf(size, chunkSize, fanout) {
  let n = Math.ceil(size / chunkSize)
  let h = 1
  for (n = Math.ceil(n / fanout); n > 1; n = Math.ceil(n / fanout)) h++
  return h
}
