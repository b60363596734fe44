// Structure-aware mutations of valid bundles for the import fuzzer. makeCase(rng, sc) picks a bundle
// of the scenarios (fuzz-bundle.mjs) and one or more mutations, at one of four layers:
//   model    manifest fields, region shapes, names, blob chunk lists, tree nodes — CIDs re-computed,
//            so the bundle passes the hash check and reaches the checks behind it;
//   sections blocks dropped, duplicated, reordered, added; header roots; CID bytes and block bytes
//            changed without re-computing (hash and CID checks);
//   bytes    CAR framing: varints, truncation, flips, garbage, header, CARv2 wrapping, gzip;
//   options  `as` / `timelinePrefix`.
// It returns the bytes to import, the bundle to import first (thin bundles), the options, a
// description, whether the bundle must import (`mustImport`: the mutation keeps it valid) and the
// header's root CIDs.
import { gzipSync } from 'node:zlib'
import { CID } from 'multiformats/cid'
import * as B from './fuzz-bundle.mjs'

/** Names no store may take (for some kinds: the valid ones are there to be accepted where they are). */
export const HOSTILE_NAMES = [
  '../..', '..', '.', '', '/abs', 'a//b', 'a/', 'sub/dir', '\u0000', 'a\u0000b', '\u001b[31mred\u001b[0m', '\u001b]0;title\u0007',
  ' ', 'a b', '-x', '.hidden', '_x', 'x'.repeat(65), 'x'.repeat(201), 'é', 'r\u00e9gion', '\u202eevil', 'a@b', 'a@1', 'a:b', 'a+b', '~', '\n', 'a\tb',
  'x/./y', 'x/../y', 'a\\b', 'C:\\x', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'x'.repeat(64), 'x'.repeat(200), 'ci/run-42', 'Ram.0_1-2', 'a\u007f',
]

const FIELD_VALUES = {
  v: [3, 1, 2, 0, '1', null, 1.5, -1, [1]],
  lineage: ['', 'ABCDEF0123456789ABCDEF0123456789', 'x', 5, null, '0123456789abcdef0123456789abcde', '0123456789abcdef0123456789abcdef0', B.OTHER_LINEAGE],
  vtime: [-1, 0, 1, 2 ** 53 - 1, 2 ** 53, 2n ** 64n - 1n, 2n ** 63n, -(2n ** 64n), 1.5, '5', null, [], 1e300],
  wall: [-1, 0, 8.64e15, 8.64e15 + 1, 2 ** 53 - 1, 2 ** 53, 1.5, '2024', null, 2n ** 64n - 1n, 1e300, -8.64e15, 1],
  meta: [{}, { label: 5 }, { label: 'x'.repeat(70_000) }, { label: 'x'.repeat(65_536) }, { ['k'.repeat(300)]: 'v' }, { ['k'.repeat(256)]: 'v' }, 'str', null, [], { a: null }, { '\u001b[31m': 'x' }, { ['__proto__']: 'x' }, { ['__proto__']: { a: 'b' } }, { a: { b: 'c' } }, { '': '' }],
  size: [0, -1, 1, 4095, 4096, 4097, 1000, 70 * 4096, 70 * 4096 + 999, 70 * 4096 + 1001, 71 * 4096, 2 * 71 * 4096, 2 ** 40, 2 ** 40 + 1, 2 ** 53 - 1, 2 ** 53, 2n ** 60n, 1.5, '100', null, 4 * 65536 - 1, 4 * 65536 + 1, 3 * 65536],
  chunk: [0, 1, 2, 511, 512, 1024, 2048, 4095, 4096, 4097, 8192, 65536, 2 ** 20, 2 ** 21, 2 ** 31, 2 ** 32, -4096, 1.5, null, '4096'],
  fanout: [0, 1, 1, 0, 2, 3, 4, 7, 8, 9, 16, 255, 256, 257, 65536, 65537, 2 ** 31, -1, 1.5, null, 2 ** 53, '8'],
  blobSize: [0, -1, 1, 99, 100, 2499, 2501, 2 ** 53, 1.5, null, '2500'],
  chunkLength: [0, -1, 1, 100, 699, 701, 4096, 2 ** 24, 2 ** 24 + 1, 1.5, null, '700'],
}

function randomCid(rng, codec) {
  return B.cidBytes(codec, rng.bytes(32))
}

function cidObj(bytes) {
  return CID.decode(bytes)
}

/** Hostile values for a link: missing blocks, foreign CIDs, non-CIDs. */
function hostileLink(rng, sc) {
  const k = rng.int(0, 9)
  if (k === 0) return B.lit(cidObj(randomCid(rng, B.RAW)))
  if (k === 1) return B.lit(cidObj(randomCid(rng, B.DAG_CBOR)))
  if (k === 2) return B.lit(B.sha256Cid(rng.pick([B.RAW, B.DAG_CBOR]), rng.bytes(10)))
  if (k === 3) return B.lit(CID.createV1(0x70, CID.decode(randomCid(rng, B.RAW)).multihash))
  if (k === 4) return B.lit(rng.pick(['x', 5, [], new Uint8Array(36), {}, true]))
  if (k === 5) return rng.pick(sc.run)
  if (k === 6) return rng.pick(sc.pages)
  if (k === 7) return B.chunk(rng.bytes(rng.int(1, 9000)))
  return B.value(rng.pick([[], [null], [1, 2], { a: 1 }, 'x', new Uint8Array(10)]))
}

function pickKey(rng, o) {
  const keys = o && typeof o === 'object' ? Object.keys(o) : []
  return keys.length ? rng.pick(keys) : undefined
}

/** A version-2 parentCid that is not the bytes of a dag-cbor CID (or a link, or the bytes of an absent one). */
function hostileParentBytes(rng, sc) {
  const k = rng.int(0, 7)
  if (k === 0) return B.lit(randomCid(rng, B.RAW))
  if (k === 1) return B.lit(randomCid(rng, B.DAG_CBOR)) // well-formed, of no checkpoint here: history only
  if (k === 2) return B.lit(B.sha256Cid(B.DAG_CBOR, rng.bytes(10)).bytes)
  if (k === 3) return B.lit(rng.bytes(rng.pick([0, 1, 35, 37, 40])))
  if (k === 4) return B.lit(Uint8Array.of(0, ...randomCid(rng, B.DAG_CBOR)))
  if (k === 5) return B.cidOf(rng.pick(sc.pages))
  return hostileLink(rng, sc)
}

/** Mutations of one manifest's fields (a copy: the scenario's entities never change). */
const MANIFEST_MUTATIONS = {
  v: (rng, f) => `v=${show((f.v = rng.pick(FIELD_VALUES.v)))}`,
  timeline: (rng, f) => {
    f.timeline = rng.chance(0.8) ? rng.pick(HOSTILE_NAMES) : rng.pick(['fz/alt', 'x', 7, null, 'fz', 'fz/run/x'])
    return `timeline=${show(f.timeline)}`
  },
  lineage: (rng, f) => `lineage=${show((f.lineage = rng.pick(FIELD_VALUES.lineage)))}`,
  vtime: (rng, f) => `vtime=${show((f.vtime = rng.pick(FIELD_VALUES.vtime)))}`,
  wall: (rng, f) => `wall=${show((f.wall = rng.pick(FIELD_VALUES.wall)))}`,
  parent: (rng, f, sc) => {
    const k = rng.int(0, 4)
    // version 2: parentCid, the parent CID's bytes (a link there, or bytes of no dag-cbor CID, is refused)
    if (Object.hasOwn(f, 'parentCid')) f.parentCid = k === 0 ? null : k === 1 ? B.cidOf(rng.pick(sc.run)) : hostileParentBytes(rng, sc)
    else f.parent = k === 0 ? null : k === 1 ? rng.pick(sc.run) : hostileLink(rng, sc)
    return `parent=${k}`
  },
  /** the other version's parent field: a link under version 2, bytes under version 1, or both */
  parentField: (rng, f, sc) => {
    const link = rng.pick(sc.run)
    const k = rng.int(0, 3)
    if (k !== 1) delete f.parentCid
    if (k !== 2) delete f.parent
    if (k !== 1) f.parent = rng.chance(0.5) ? link : B.cidOf(link)
    if (k !== 2) f.parentCid = rng.chance(0.5) ? B.cidOf(link) : link
    return `parent field ${k}`
  },
  meta: (rng, f) => `meta=${show((f.meta = rng.pick(FIELD_VALUES.meta)))}`,
  regionsWhole: (rng, f) => `regions=${show((f.regions = rng.pick([{}, 'x', null, [], B.lit(cidObj(randomCid(rng, B.DAG_CBOR))), 5])))}`,
  blobsWhole: (rng, f) => `blobs=${show((f.blobs = rng.pick([{}, 'x', null, [], 5])))}`,
  missingKey: (rng, f) => {
    const k = pickKey(rng, f)
    delete f[k]
    return `missing ${k}`
  },
  extraKey: (rng, f) => {
    const k = rng.pick(['x', 'extra', 'V', 'regions2', 'Timeline'])
    f[k] = rng.pick([1, 'x', {}, null])
    return `extra ${k}`
  },
  regionName: (rng, f) => {
    const r = pickKey(rng, f.regions)
    const to = rng.chance(0.85) ? rng.pick(HOSTILE_NAMES) : rng.pick(['ram2', 'disk', 'mem'])
    if (r === undefined || !f.regions || typeof f.regions !== 'object') return 'no region'
    const v = f.regions[r]
    delete f.regions[r]
    f.regions[to] = v
    return `region ${r}->${show(to)}`
  },
  regionField: (rng, f, sc) => {
    const r = pickKey(rng, f.regions)
    if (r === undefined) return 'no region'
    const e = f.regions[r]
    if (!e || typeof e !== 'object' || Array.isArray(e) || typeof e.t === 'string') return 'odd region'
    const field = rng.pick(['size', 'chunk', 'fanout', 'root', 'root', 'missing', 'extra', 'whole'])
    if (field === 'size' || field === 'chunk' || field === 'fanout') e[field] = rng.pick(FIELD_VALUES[field])
    else if (field === 'root') {
      const other = Object.values(sc.run[rng.int(0, 4)].f.regions).map((x) => x.root)
      e.root = rng.chance(0.4) ? rng.pick([null, ...other]) : hostileLink(rng, sc)
    } else if (field === 'missing') delete e[rng.pick(['size', 'chunk', 'fanout', 'root'])]
    else if (field === 'extra') e[rng.pick(['x', 'chunkSize', 'Size'])] = 1
    else f.regions[r] = rng.pick(['x', null, [], 5, {}])
    return `region ${r} ${field}=${show(e[field])}`
  },
  blobName: (rng, f) => {
    const b = pickKey(rng, f.blobs)
    const to = rng.pick(HOSTILE_NAMES)
    if (b === undefined) {
      if (f.blobs && typeof f.blobs === 'object') f.blobs[to] = { size: 0, chunks: [] }
      return `blob +${show(to)}`
    }
    const v = f.blobs[b]
    delete f.blobs[b]
    f.blobs[to] = v
    return `blob ${b}->${show(to)}`
  },
  blobField: (rng, f, sc) => {
    if (!f.blobs || typeof f.blobs !== 'object') return 'no blobs'
    let b = pickKey(rng, f.blobs)
    if (b === undefined) {
      b = 'cpu'
      f.blobs.cpu = { size: 700, chunks: [[sc.blobParts[0], 700]] }
    }
    const e = f.blobs[b]
    if (!e || typeof e !== 'object' || !Array.isArray(e.chunks)) return 'odd blob'
    const what = rng.pick(['size', 'length', 'length', 'lengthAndSize', 'cid', 'cidKeepLength', 'pair', 'add', 'empty', 'missing', 'extra', 'whole'])
    const i = e.chunks.length ? rng.int(0, e.chunks.length) : -1
    if (what === 'size') e.size = rng.pick(FIELD_VALUES.blobSize)
    else if ((what === 'length' || what === 'lengthAndSize') && i >= 0) {
      const old = e.chunks[i][1]
      e.chunks[i][1] = rng.chance(0.5) ? rng.pick(FIELD_VALUES.chunkLength) : old + rng.pick([-1, 1, 100, -100, 4096])
      // lengths that add up to the size: only the real lengths can tell the lie
      if (what === 'lengthAndSize' && typeof e.chunks[i][1] === 'number' && typeof old === 'number') e.size = e.size - old + e.chunks[i][1]
    } else if (what === 'cid' && i >= 0) e.chunks[i][0] = hostileLink(rng, sc)
    else if (what === 'cidKeepLength' && i >= 0) {
      // another real chunk, claimed with the old length (a lie unless the lengths agree)
      e.chunks[i][0] = rng.pick([...sc.blobParts, ...sc.pages, ...sc.lasts])
    } else if (what === 'pair' && i >= 0) e.chunks[i] = rng.pick([[e.chunks[i][0]], [...e.chunks[i], 1], 'x', [e.chunks[i][1], e.chunks[i][0]], null])
    else if (what === 'add') {
      const c = rng.pick([...sc.blobParts, ...sc.pages])
      e.chunks.push([c, c.bytes.length])
      e.size += c.bytes.length
    } else if (what === 'empty') f.blobs[b] = { size: 0, chunks: [] }
    else if (what === 'missing') delete e[rng.pick(['size', 'chunks'])]
    else if (what === 'extra') e.x = 1
    else if (what === 'whole') f.blobs[b] = rng.pick(['x', null, [], 5, {}])
    return `blob ${b} ${what} [${i}]`
  },
}

/** Region shapes and blob chunk lists are where most checks are: picked more often. */
const MANIFEST_PICKS = [...Object.keys(MANIFEST_MUTATIONS), 'regionField', 'regionField', 'regionField', 'regionField', 'blobField', 'blobField', 'wall', 'regionName', 'blobName']

/** Which manifest mutations keep a bundle valid (then it must import). */
function manifestMutationValid(name, desc) {
  if (name === 'parent') return /^parent=[01]$/.test(desc)
  if (name === 'blobField') return / (add|empty) /.test(desc)
  return false
}

/** Mutations of one node of a region tree: (rng, node, level, ctx) -> { node, desc, valid } */
const NODE_MUTATIONS = {
  dropSlot: (rng, n) => {
    const slots = n.slots.slice()
    slots.splice(rng.chance(0.5) ? slots.length - 1 : rng.int(0, slots.length), 1)
    return { node: B.node(slots), desc: 'slot dropped' }
  },
  addSlot: (rng, n, level, sc) => ({ node: B.node([...n.slots, rng.pick([null, rng.pick(sc.pages), n])]), desc: 'slot added' }),
  hole: (rng, n) => {
    const slots = n.slots.slice()
    slots[rng.int(0, slots.length)] = null
    return { node: B.node(slots), desc: 'hole', valid: true }
  },
  kind: (rng, n, level, sc, nodes) => {
    const slots = n.slots.slice()
    const s = rng.int(0, slots.length)
    slots[s] = level === 1 ? rng.pick(nodes).node : rng.pick([...sc.pages, ...sc.lasts])
    return { node: B.node(slots), desc: `link kind swapped in slot ${s}` }
  },
  length: (rng, n, level, sc) => {
    if (level !== 1) return undefined
    const slots = n.slots.slice()
    const s = rng.chance(0.4) ? slots.length - 1 : rng.int(0, slots.length)
    const len = rng.pick([1, 100, 1000, 4095, 4096, 4097, 8192, 65536, 123])
    slots[s] = B.chunk(rng.bytes(len))
    return { node: B.node(slots), desc: `chunk of ${len} B in slot ${s}` }
  },
  swap: (rng, n) => {
    const slots = n.slots.slice()
    const a = rng.int(0, slots.length)
    const b = rng.int(0, slots.length)
    ;[slots[a], slots[b]] = [slots[b], slots[a]]
    return { node: B.node(slots), desc: `slots ${a} and ${b} swapped` }
  },
  level: (rng, n, level, sc, nodes) => {
    const slots = n.slots.slice()
    const s = rng.int(0, slots.length)
    slots[s] = rng.pick(nodes).node
    return { node: B.node(slots), desc: `slot ${s} linked to another node` }
  },
  lit: (rng, n, level, sc) => {
    const slots = n.slots.slice()
    const s = rng.int(0, slots.length)
    slots[s] = hostileLink(rng, sc)
    return { node: B.node(slots), desc: `slot ${s} hostile link` }
  },
  weird: (rng) => ({ node: B.value(rng.pick([[], [null], [1, 2], { a: 1 }, 'x', new Uint8Array(10), [[null]], [new Uint8Array(37)], Array(300).fill(null)])), desc: 'node replaced by another dag-cbor value' }),
  share: (rng, n, level) => {
    if (level < 2) return undefined
    const full = n.slots.filter((x) => x && x.t === 'node')
    if (!full.length) return undefined
    const pick = rng.pick(full)
    return { node: B.node(n.slots.map((x, i) => (i < n.slots.length - 1 || rng.chance(0.5) ? pick : x))), desc: 'one child at every place' }
  },
}

function show(x) {
  if (typeof x === 'string') return JSON.stringify(x.length > 30 ? x.slice(0, 30) + '…' : x)
  if (typeof x === 'bigint') return `${x}n`
  if (x && typeof x === 'object') return Array.isArray(x) ? '[...]' : '{...}'
  return String(x)
}

function manifestIndexes(roots) {
  return roots.map((m, i) => (m && m.t === 'manifest' ? i : -1)).filter((i) => i >= 0)
}

function mutateModel(rng, c) {
  const sc = c.sc
  const idx = manifestIndexes(c.roots)
  if (!idx.length) return
  const k = rng.pick(idx)
  const m = c.roots[k]
  const layer = rng.int(0, 10)
  const f = B.cloneFields(m.f)
  if (layer < 6) {
    const name = rng.pick(MANIFEST_PICKS)
    const desc = MANIFEST_MUTATIONS[name](rng, f, sc)
    c.desc.push(`manifest ${k} ${name}: ${desc}`)
    if (!manifestMutationValid(name, desc)) c.mustImport = false
  } else if (layer < 9) {
    // a node of a region tree
    const r = pickKey(rng, f.regions)
    const reg = r === undefined ? undefined : f.regions[r]
    const shaped = reg && Number.isSafeInteger(reg.size) && reg.size > 0 && [4096, 65536].includes(reg.chunk) && [8, 256].includes(reg.fanout)
    if (!shaped || !reg.root || reg.root.t !== 'node') return mutateModel(rng, c)
    const h = B.heightOf(reg.size, reg.chunk, reg.fanout)
    const nodes = B.nodesOf(reg.root, h)
    const pick = rng.pick(nodes)
    const name = rng.pick(Object.keys(NODE_MUTATIONS))
    const out = NODE_MUTATIONS[name](rng, pick.node, pick.level, sc, nodes)
    if (!out) return mutateModel(rng, c)
    reg.root = B.replaceAt(reg.root, pick.path, out.node)
    c.desc.push(`manifest ${k} region ${r} node [${pick.path}] (level ${pick.level}) ${name}: ${out.desc}`)
    if (!out.valid) c.mustImport = false
  } else {
    // a whole other manifest value in its place
    c.roots = B.replaceManifest(c.roots, m, B.value(rng.pick([{ v: 1 }, [], 'x', { ...m.f, v: 1, regions: undefined }].map((x) => (x && x.regions === undefined && typeof x === 'object' && !Array.isArray(x) ? stripUndefined(x) : x)))))
    c.desc.push(`manifest ${k} replaced by another value`)
    c.mustImport = false
    return
  }
  c.roots = B.replaceManifest(c.roots, m, B.manifest(f))
}

function stripUndefined(o) {
  const out = {}
  for (const k of Object.keys(o)) if (o[k] !== undefined) out[k] = o[k]
  return out
}

/** Section-level mutations: applied to the encoded section list (CIDs not re-computed). */
function mutateSections(rng, c) {
  const secs = c.sections
  const what = rng.pick(['drop', 'dup', 'dup', 'preorder', 'shuffle', 'extra', 'roots', 'cid', 'cid', 'block'])
  const i = secs.length ? rng.int(0, secs.length) : 0
  if (what === 'drop' && secs.length) {
    secs.splice(i, 1)
    c.mustImport = false
  } else if (what === 'dup' && secs.length) secs.splice(rng.int(0, secs.length + 1), 0, secs[i])
  else if (what === 'preorder') secs.reverse()
  else if (what === 'shuffle') c.rng.shuffle(secs)
  else if (what === 'extra') {
    const k = rng.int(0, 4)
    let e
    if (k === 0) e = B.chunk(rng.bytes(rng.int(1, 5000)))
    else if (k === 1) e = B.value(rng.pick([{ a: 1 }, [null, null], ['x'], { v: 1 }, new Uint8Array(5)]))
    else if (k === 2) e = rng.pick([c.sc.other, ...c.sc.run])
    else e = B.node([rng.pick(c.sc.pages), null])
    const b = B.blockOf(e)
    secs.splice(rng.int(0, secs.length + 1), 0, { cid: b.cid, block: b.bytes })
  } else if (what === 'roots') {
    const r = c.headerRoots
    let k = rng.int(0, 9)
    if (k === 0 && r.length < 2) k = 1
    if (k === 0) r.splice(rng.int(0, r.length), 1)
    else if (k === 1) r.push(cidObj(randomCid(rng, B.RAW)))
    else if (k === 2) r.push(cidObj(randomCid(rng, B.DAG_CBOR)))
    else if (k === 3 && r.length) r.push(r[0])
    else if (k === 4) r.length = 0
    else if (k === 5) r.push(B.sha256Cid(B.DAG_CBOR, rng.bytes(4)))
    else if (k === 6) r.push(rng.pick(['x', 5, null, new Uint8Array(36)]))
    else if (k === 7) r.push(cidObj(B.blockOf(rng.pick(c.sc.pages)).cid))
    else r.push(cidObj(B.blockOf(rng.pick(B.nodesOf(c.sc.run[0].f.regions.ram.root, 3)).node).cid))
    c.desc.push(`header roots ${k}`)
    // dropping one root keeps a bundle valid (its manifest is then not read); all else does not
    if (k !== 0) c.mustImport = false
    return
  } else if (what === 'cid' && secs.length) {
    const cid = Uint8Array.from(secs[i].cid)
    const k = rng.int(0, 7)
    if (k === 0) cid[1] = rng.pick([0x70, 0x00, 0x56, 0x72])
    else if (k === 1) cid[2] = rng.pick([0x12, 0x1f, 0x00])
    else if (k === 2) cid[3] = rng.pick([0x1f, 0x21, 0x00, 0x40])
    else if (k === 3) cid[0] = rng.pick([0x00, 0x02, 0x12])
    else if (k === 4) cid[4 + rng.int(0, 32)] ^= 1 << rng.int(0, 8)
    else if (k === 5 && secs.length > 1) secs[rng.int(0, secs.length)] = { cid: secs[i].cid, block: secs[rng.int(0, secs.length)].block }
    else cid[1] = cid[1] === B.RAW ? B.DAG_CBOR : B.RAW
    if (k !== 5) secs[i] = { cid, block: secs[i].block }
    c.mustImport = false
  } else if (what === 'block' && secs.length) {
    const block = Uint8Array.from(secs[i].block)
    const k = rng.int(0, 3)
    if (k === 0 && block.length) block[rng.int(0, block.length)] ^= 1 << rng.int(0, 8)
    secs[i] = { cid: secs[i].cid, block: k === 1 ? block.subarray(0, Math.max(0, block.length - 1)) : k === 2 ? Buffer.concat([block, Uint8Array.of(0)]) : block }
    c.mustImport = false
  }
  c.desc.push(`sections ${what} @${i}`)
}

/** Byte-level mutations of the CAR. */
function mutateBytes(rng, c, bytes) {
  const what = rng.pick(['cut', 'cut', 'flip', 'insert', 'delete', 'varint', 'varint', 'garbage', 'header', 'carv2', 'gzip', 'empty', 'random'])
  c.desc.push(`bytes ${what}`)
  const at = rng.int(0, bytes.length + 1)
  if (what !== 'carv2' && what !== 'gzip') c.mustImport = false
  switch (what) {
    case 'cut':
      return bytes.subarray(0, at)
    case 'flip': {
      const out = Buffer.from(bytes)
      for (let n = rng.int(1, 4); n > 0 && out.length; n--) out[rng.int(0, out.length)] ^= 1 << rng.int(0, 8)
      return out
    }
    case 'insert':
      return Buffer.concat([bytes.subarray(0, at), rng.bytes(rng.int(1, 40)), bytes.subarray(at)])
    case 'delete':
      return Buffer.concat([bytes.subarray(0, at), bytes.subarray(Math.min(bytes.length, at + rng.int(1, 40)))])
    case 'varint': {
      // a section's length prefix: non-minimal, off by some, absurd
      const offs = sectionOffsets(bytes)
      if (!offs.length) return bytes
      const o = rng.pick(offs)
      const v = o.len
      const k = rng.int(0, 6)
      const enc = k === 0 ? Uint8Array.of(...B.varint(v).map((b) => b | 0x80), 0x00) : k === 1 ? B.varint(v + rng.pick([1, -1, 36, -36, 1000])) : k === 2 ? Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x0f) : k === 3 ? Uint8Array.of(0x00) : k === 4 ? Uint8Array.of(0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01) : B.varint(17 << 20)
      return Buffer.concat([bytes.subarray(0, o.at), enc, bytes.subarray(o.at + o.width)])
    }
    case 'garbage':
      return Buffer.concat([bytes, rng.chance(0.5) ? rng.bytes(rng.int(1, 200)) : B.carSection(randomCid(rng, B.RAW), rng.bytes(50))])
    case 'header': {
      const offs = sectionOffsets(bytes)
      const rest = bytes.subarray(offs.length ? offs[0].at : bytes.length)
      const k = rng.int(0, 6)
      const h =
        k === 0 ? B.carHeader(c.headerRoots, 2) : k === 1 ? Buffer.concat([B.varint(0)]) : k === 2 ? Buffer.concat([B.varint(1 << 21), rest.subarray(0, 10)]) : k === 3 ? (() => {
          const body = Buffer.from([0x82, 0x01, 0x02])
          return Buffer.concat([B.varint(body.length), body])
        })() : k === 4 ? (() => {
          const body = Buffer.from([0xa2, 0x65, ...Buffer.from('roots'), 0x61, 0x78, 0x67, ...Buffer.from('version'), 0x01])
          return Buffer.concat([B.varint(body.length), body])
        })() : B.carHeader([...c.headerRoots, ...c.headerRoots.slice(0, 1)])
      return Buffer.concat([h, rest])
    }
    case 'carv2': {
      const pragma = Buffer.from([0x0a, 0xa1, 0x67, 0x76, 0x65, 0x72, 0x73, 0x69, 0x6f, 0x6e, 0x02])
      const header = Buffer.alloc(40)
      const pad = rng.int(0, 9)
      const bad = rng.chance(0.4)
      header.writeBigUInt64LE(BigInt(pragma.length + 40 + pad + (bad && rng.chance(0.5) ? rng.int(1, 50) : 0)), 16)
      header.writeBigUInt64LE(BigInt(Math.max(0, bytes.length + (bad ? rng.pick([1, -1, 1000, -bytes.length]) : 0))), 24)
      if (bad) c.mustImport = false
      return Buffer.concat([pragma, header, Buffer.alloc(pad), bytes, Buffer.from('index')])
    }
    case 'gzip': {
      const z = gzipSync(bytes, { level: 1 })
      if (rng.chance(0.4)) {
        c.mustImport = false
        return z.subarray(0, rng.int(0, z.length))
      }
      return z
    }
    case 'empty':
      return new Uint8Array(0)
    default:
      return rng.bytes(rng.int(0, 3000))
  }
}

/** Where the length prefix of each section is (a CAR as encodeCar writes it). */
function sectionOffsets(bytes) {
  const out = []
  const read = (at) => {
    let n = 0
    let mul = 1
    for (let i = 0; i < 8 && at + i < bytes.length; i++) {
      const b = bytes[at + i]
      n += (b & 0x7f) * mul
      mul *= 128
      if (!(b & 0x80)) return { n, width: i + 1 }
    }
    return undefined
  }
  const h = read(0)
  if (!h) return out
  let at = h.width + h.n
  while (at < bytes.length) {
    const s = read(at)
    if (!s) break
    out.push({ at, len: s.n, width: s.width })
    at += s.width + s.n
  }
  return out
}

function mutateOptions(rng, c) {
  const k = rng.int(0, 5)
  if (k === 0) c.opts.as = 'renamed'
  else if (k === 1) c.opts.as = rng.pick(HOSTILE_NAMES)
  else if (k === 2) c.opts.timelinePrefix = 'pre/'
  else if (k === 3) c.opts.timelinePrefix = rng.pick(['../', '/', 'a//', '.', 'x'.repeat(199), '\u001b'])
  else c.opts.timelinePrefix = ''
  c.desc.push(`options ${JSON.stringify(c.opts)}`)
  // `as` is one timeline only; hostile names are refused
  const timelines = new Set(c.roots.map((m) => m.f?.timeline))
  if (k === 1 || k === 3 || (k === 0 && timelines.size > 1)) c.mustImport = false
}

/**
 * One fuzz case: { bytes, base (bytes to import first, or undefined), opts, desc, mustImport,
 * roots (the header's root CIDs as bytes, where they are CIDs), pieces (chunk size of the source) }.
 */
export function makeCase(rng, sc) {
  const scenario = rng.pick(['full', 'full', 'full', 'single', 'single', 'thin', 'thin'])
  const bundle = sc.bundles[scenario]
  const c = { rng, sc, roots: bundle.roots.slice(), desc: [scenario], mustImport: true, opts: {}, headerRoots: undefined, sections: undefined }
  const n = rng.chance(0.2) ? rng.int(2, 4) : 1
  const layers = []
  for (let i = 0; i < n; i++) layers.push(rng.pick(['none', 'model', 'model', 'model', 'model', 'model', 'sections', 'sections', 'bytes', 'bytes', 'options']))
  let bytes
  try {
    for (const l of layers) if (l === 'model') mutateModel(rng, c)
    if (layers.every((l) => l === 'none')) c.desc.push('unchanged')
    const omit = bundle.base ? B.reachable(bundle.base) : new Set()
    c.headerRoots = c.roots.map((m) => CID.decode(B.blockOf(m).cid))
    c.sections = B.sectionsOf(c.roots, omit)
    for (const l of layers) if (l === 'sections') mutateSections(rng, c)
    for (const l of layers) if (l === 'options') mutateOptions(rng, c)
    bytes = B.carOf(c.headerRoots, c.sections)
    for (const l of layers) if (l === 'bytes') bytes = mutateBytes(rng, c, bytes)
  } catch (err) {
    err.message += ` [${c.desc.join('; ')}]`
    throw err
  }
  const roots = c.headerRoots.map((r) => CID.asCID(r)?.bytes).filter((r) => r && r.length === 36)
  return {
    bytes,
    base: bundle.base ? B.encodeCar(bundle.base) : undefined,
    opts: c.opts,
    desc: c.desc.join('; '),
    mustImport: c.mustImport,
    roots,
    pieces: rng.chance(0.3) ? rng.int(1, 5000) : 1 << 20,
  }
}

