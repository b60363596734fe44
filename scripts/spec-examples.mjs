#!/usr/bin/env node
// The worked hex examples of SPEC.md, made by the built codecs (run `npm run build` first), never by
// hand. Each example is a list of [bytes, what they are]; rendered as an annotated hex dump (hex
// pairs, two spaces, the label). test/src/spec-examples.test.ts checks that SPEC.md holds exactly
// these bytes and that they decode as SPEC.md says.
//
//   node scripts/spec-examples.mjs           print the examples
//   node scripts/spec-examples.mjs --write   fill SPEC.md's blocks between
//                                            <!-- spec-example: NAME --> and <!-- /spec-example -->
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const dist = (p) => import(path.join(root, 'dist', p))

const { blake3 } = await dist('codecs/blake3.js')
const { cidBytes, RAW, DAG_CBOR } = await dist('codecs/cid.js')
const { encodeNode } = await dist('codecs/tree-node.js')
const { encodeNodeDelta } = await dist('codecs/node-delta.js')
const { encodeManifest } = await dist('codecs/manifest.js')
const { writeEntry, ENTRY_HEADER_SIZE, ENTRY_KIND } = await dist('codecs/pack-format.js')
const { AT_REST } = await dist('codecs/compress.js')
const { encodeCarHeader } = await dist('codecs/car.js')

const CHUNK = 4096
const chunk = (byte) => new Uint8Array(CHUNK).fill(byte)
const rawCid = (bytes) => cidBytes(RAW, blake3(bytes))
const cborCid = (bytes) => cidBytes(DAG_CBOR, blake3(bytes))

/** A level-1 node of `slots` (a raw chunk's bytes or null for a hole). */
function node(slots) {
  const codecs = new Uint8Array(slots.length)
  const digests = new Uint8Array(slots.length * 32)
  slots.forEach((c, i) => {
    if (!c) return
    codecs[i] = RAW
    digests.set(blake3(c), i * 32)
  })
  return { count: slots.length, codecs, digests }
}

/**
 * The scenario: region `ram` of 16 KiB in 4 KiB chunks (4 chunks, one level-1 node that is the root).
 * Version 1: chunks 0x61…, hole, 0x62…, hole. Version 2: chunk 1 becomes 0x63…, chunk 2 a hole.
 */
export function build() {
  const a = chunk(0x61)
  const b = chunk(0x62)
  const c = chunk(0x63)
  const v1 = node([a, null, b, null])
  const v2 = node([a, c, null, null])
  const v1Bytes = encodeNode(v1)
  const v2Bytes = encodeNode(v2)
  const v1Cid = cborCid(v1Bytes)
  const v2Cid = cborCid(v2Bytes)
  const delta = encodeNodeDelta(v1Cid, v1, v2, v2Bytes.length)
  if (!delta) throw new Error('the example delta is not smaller than its node')

  // the pack entry storing version 2 as a delta of version 1 (depth 1: the base is stored whole)
  const entry = Buffer.alloc(ENTRY_HEADER_SIZE + delta.length)
  writeEntry(entry, 0, v2Cid, AT_REST.nodeDelta, 1, v2Bytes.length, delta, ENTRY_KIND.block)

  // the timeline's first checkpoint (vtime 0, ram the version-1 node), then the example: its child
  const ramOf = (root) => ({ ram: { size: 4 * CHUNK, chunkSize: CHUNK, fanout: 256, root } })
  const first = { timeline: 'run', lineage: '0123456789abcdef0123456789abcdef', vtime: 0n, wall: 1767225590000, parent: null, meta: {}, regions: ramOf(v1Cid), blobs: {} }
  const parentCid = cborCid(encodeManifest(first))
  const manifest = encodeManifest({ ...first, vtime: 10000000n, wall: 1767225600000, parent: parentCid, meta: { label: 'boot' }, regions: ramOf(v2Cid) })
  const manifestCid = cborCid(manifest)
  const carHeader = encodeCarHeader([manifestCid])
  return { a, b, c, v1, v2, v1Bytes, v2Bytes, v1Cid, v2Cid, delta, entry: new Uint8Array(entry), parentCid, manifest, manifestCid, carHeader }
}

const hex = (b) => Buffer.from(b).toString('hex')

function linkRows(cid, label) {
  return [
    [Uint8Array.of(0xd8, 0x2a), 'tag 42 (a CID link)'],
    [Uint8Array.of(0x58, 0x25), 'byte string, 37 bytes'],
    [Uint8Array.of(0x00), 'multibase identity prefix'],
    [cid.subarray(0, 4), `CIDv1, ${cid[1] === RAW ? 'raw' : 'dag-cbor'}, BLAKE3 (0x1e), 32-byte digest`],
    [cid.subarray(4), label],
  ]
}

function nodeRows(bytes, slotLabels) {
  const rows = [[bytes.subarray(0, 1), `array of ${slotLabels.length} slots`]]
  let p = 1
  slotLabels.forEach((label, slot) => {
    if (bytes[p] === 0xf6) {
      rows.push([bytes.subarray(p, p + 1), `slot ${slot}: null (a hole)`])
      p += 1
    } else {
      rows.push(...linkRows(bytes.subarray(p + 5, p + 41), `slot ${slot}: BLAKE3 of ${label}`))
      p += 41
    }
  })
  if (p !== bytes.length) throw new Error('node rows do not cover the node')
  return rows
}

/** The manifest's rows: the map up to `parentCid`, then that field (its CID as a byte string, not a link), then any rest. */
function manifestRows(m, parentCid) {
  const key = Buffer.from([0x69, ...Buffer.from('parentCid')])
  const k = Buffer.from(m).indexOf(key)
  const p = k + key.length
  if (k < 0 || m[p] !== 0x58 || m[p + 1] !== 36 || Buffer.compare(m.subarray(p + 2, p + 38), parentCid) !== 0) throw new Error('the manifest example has no parentCid byte string')
  return [
    [m.subarray(0, k), `the manifest (${m.length} bytes of dag-cbor), up to parentCid`],
    [m.subarray(k, p), 'text(9) "parentCid"'],
    [m.subarray(p, p + 2), 'byte string, 36 bytes (no tag 42: not a link)'],
    [m.subarray(p + 2, p + 6), 'CIDv1, dag-cbor, BLAKE3 (0x1e), 32-byte digest'],
    [m.subarray(p + 6, p + 38), 'BLAKE3 of the parent: the manifest at vtime 0'],
    ...(p + 38 < m.length ? [[m.subarray(p + 38), 'the rest of the map']] : []),
  ]
}

/** The examples, in SPEC.md's order: name -> rows of [bytes, label]. */
export function examples(x = build()) {
  const d = x.delta
  const deltaRows = [
    [d.subarray(0, 4), 'base CID: CIDv1 dag-cbor BLAKE3-256 …'],
    [d.subarray(4, 36), '… the digest of the tree-node example (version 1)'],
    [d.subarray(36, 37), `newCount = ${x.v2.count} (varint)`],
    [d.subarray(37, 38), `patchCount = ${d[37]} (varint)`],
    [d.subarray(38, 39), `slot ${d[38]} (varint)`],
    [d.subarray(39, 40), 'codec 0x55: a raw link, its digest follows'],
    [d.subarray(40, 72), 'BLAKE3 of 4096 × 0x63'],
    [d.subarray(72, 73), `slot ${d[72]} (varint)`],
    [d.subarray(73, 74), 'codec 0: a hole, no digest'],
  ]
  if (d.length !== 74) throw new Error(`the delta is ${d.length} bytes, the rows cover 74`)
  const e = x.entry
  const entryRows = [
    [e.subarray(0, 4), `storedLength = ${d.length} (u32le): the payload`],
    [e.subarray(4, 8), `rawLength = ${x.v2Bytes.length} (u32le): the node the delta gives`],
    [e.subarray(8, 9), 'atRestCodec 3: node delta'],
    [e.subarray(9, 10), 'deltaDepth 1: the base is stored whole'],
    [e.subarray(10, 11), 'kind 0: a block'],
    [e.subarray(11, 12), 'zero'],
    [e.subarray(12, 16), 'CID of the content: CIDv1 dag-cbor BLAKE3-256 …'],
    [e.subarray(16, 48), '… BLAKE3 of the version-2 node (its 85-byte dag-cbor)'],
    [e.subarray(48, 52), 'CRC-32 of bytes 0–47 and the payload (u32le)'],
    [e.subarray(52), 'payload: the node-delta example, byte for byte'],
  ]
  const m = x.manifest
  const h = x.carHeader
  const carRows = [
    [h.subarray(0, 1), `varint ${h.length - 1}: the header's length`],
    [h.subarray(1, 2), 'map of 2 pairs'],
    [h.subarray(2, 8), 'text(5) "roots"'],
    [h.subarray(8, 9), 'array of 1'],
    ...linkRows(x.manifestCid, 'BLAKE3 of the manifest example').slice(0, 4),
    [h.subarray(18, 50), 'BLAKE3 of the manifest example: the checkpoint'],
    [h.subarray(50, 58), 'text(7) "version"'],
    [h.subarray(58, 59), '1'],
  ]
  if (h.length !== 59) throw new Error(`the CAR header is ${h.length} bytes, the rows cover 59`)
  return {
    'tree-node': nodeRows(x.v1Bytes, ['4096 × 0x61', null, '4096 × 0x62', null]),
    'node-delta': deltaRows,
    'pack-entry': entryRows,
    manifest: manifestRows(m, x.parentCid),
    'bundle-header': carRows,
  }
}

/** rows -> text: up to 16 bytes of hex pairs a line, the label after two spaces on the first line. */
export function render(rows) {
  const lines = []
  for (const [bytes, label] of rows) {
    const pairs = hex(bytes).match(/../g) ?? []
    for (let i = 0; i < pairs.length; i += 16) {
      const h = pairs.slice(i, i + 16).join(' ')
      lines.push(i === 0 ? `${h.padEnd(48)}  ${label}`.trimEnd() : h)
    }
  }
  return lines.join('\n')
}

/** The bytes an annotated block holds (what render wrote, read back). */
export function parseHex(block) {
  const out = []
  for (const line of block.split('\n')) {
    if (!line.trim()) continue
    const h = line.split(/ {2,}/)[0]
    if (!/^[0-9a-f]{2}( [0-9a-f]{2})*$/.test(h)) throw new Error(`not an annotated hex line: ${line}`)
    for (const p of h.split(' ')) out.push(parseInt(p, 16))
  }
  return Uint8Array.from(out)
}

/** The blocks of SPEC.md text: name -> the text inside its fence. */
export function specBlocks(text) {
  const out = {}
  const re = /<!-- spec-example: ([a-z-]+) -->\n```text\n([\s\S]*?)\n```\n<!-- \/spec-example -->/g
  for (const m of text.matchAll(re)) out[m[1]] = m[2]
  return out
}

function write(file) {
  let text = fs.readFileSync(file, 'utf8')
  const ex = examples()
  for (const [name, rows] of Object.entries(ex)) {
    const re = new RegExp(`<!-- spec-example: ${name} -->\\n[\\s\\S]*?<!-- /spec-example -->`)
    if (!re.test(text)) throw new Error(`${file} has no block for the example ${name}`)
    text = text.replace(re, () => `<!-- spec-example: ${name} -->\n\`\`\`text\n${render(rows)}\n\`\`\`\n<!-- /spec-example -->`)
  }
  fs.writeFileSync(file, text)
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  if (process.argv.includes('--write')) write(path.join(root, 'SPEC.md'))
  else for (const [name, rows] of Object.entries(examples())) console.log(`${name}:\n${render(rows)}\n`)
}
