/**
 * verify scans packs on worker threads and hands the events back as columns (scanPackCompact); read
 * back (compactEvents), they must be the events scanPack yields: on an intact pack, a sealed one, and
 * packs with damage (flipped bytes, a cut tail, a broken header).
 */
import fs from 'node:fs'
import path from 'node:path'
import { crc32 } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ENTRY_HEADER_SIZE, ENTRY_KIND } from '../../codecs/pack-format.js'
import { openStore } from '../../src/index.js'
import { compactEvents, fileReader, joinScans, scanPack, scanPackCompact, scanPackFile, splitPack, type CompactScan, type ScanEvent } from '../../store/pack-scan.js'
import { makeRng } from '../helpers/rng.js'
import { removeTmpDirs, tmpDir } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

let dir: string
let packFiles: string[]

beforeAll(async () => {
  dir = path.join(tmpDir('ckpt-scan-compact-'), 'store')
  const store = await openStore(dir, { packTargetSize: 128 << 10 })
  const rng = makeRng(7)
  const ram = Buffer.alloc(64 * 4096)
  const tl = await store.timeline('vm', { regions: { ram: { size: ram.length, chunkSize: 4096 } } })
  for (let k = 0; k < 30; k++) {
    const dirty: number[] = []
    for (let j = 0; j < 3; j++) {
      const i = rng.int(0, 64)
      ram.set(rng.bytes(4096), i * 4096)
      dirty.push(i)
    }
    await tl.checkpoint({ vtime: k, regions: { ram: k === 0 ? { data: ram } : { data: ram, dirty } } })
  }
  await store.close()
  packFiles = fs.readdirSync(path.join(dir, 'packs')).filter((f) => f.endsWith('.pack')).sort().map((f) => path.join(dir, 'packs', f))
})

/** Events as plain values (entry views copied; raw chunks' payloads are not carried by the columns). */
function plain(events: Iterable<ScanEvent>): unknown[] {
  const out: unknown[] = []
  for (const ev of events) {
    if (ev.kind !== 'entry') {
      out.push(ev)
      continue
    }
    const e = ev.entry
    out.push({
      offset: e.offset,
      storedLength: e.storedLength,
      rawLength: e.rawLength,
      codec: e.codec,
      depth: e.depth,
      kind: e.kind,
      cid: Buffer.from(e.cid).toString('hex'),
      payload: e.cid[1] === 0x55 ? undefined : Buffer.from(e.payload).toString('hex'),
    })
  }
  return out
}

function packNo(file: string): number {
  return Number(path.basename(file).slice(0, 8))
}

function same(file: string, opts: { sealed?: boolean; end?: number } = {}): unknown[] {
  const direct = plain(scanPackFile(file, packNo(file), opts))
  expect(plain(compactEvents(scanPackCompact(file, packNo(file), opts)))).toEqual(direct)
  return direct
}

describe('compact pack scans (verify on worker threads)', () => {
  it('give the events scanPack gives, on every pack of a store', () => {
    expect(packFiles.length).toBeGreaterThan(2)
    for (const f of packFiles) {
      const events = same(f, { sealed: f !== packFiles[packFiles.length - 1] })
      expect(events.filter((e) => (e as { storedLength?: number }).storedLength !== undefined).length).toBeGreaterThan(10)
    }
  })

  it('scanPack with a window the caller reuses (gc) gives the events of a scan with its own, pack after pack, damaged ones too', () => {
    const window = { buf: Buffer.alloc(0) }
    const rng = makeRng(5)
    const work = tmpDir('ckpt-scan-window-')
    let first: Buffer | undefined
    for (let t = 0; t < packFiles.length * 2; t++) {
      let f = packFiles[t % packFiles.length]!
      if (t >= packFiles.length) {
        // the second round on copies with flipped bytes: resynchronising reads through the window too
        const bytes = Buffer.from(fs.readFileSync(f))
        for (let k = 0; k < 3; k++) bytes[rng.int(16, bytes.length - 64)]! ^= 0xff
        f = path.join(work, path.basename(f))
        fs.writeFileSync(f, bytes)
      }
      const opts = { sealed: t % packFiles.length !== packFiles.length - 1 }
      expect(plain(scanPack(fileReader(f), t, { ...opts, window }))).toEqual(plain(scanPack(fileReader(f), t, opts)))
      // one buffer for every scan (4 MiB: these packs fit in it)
      first ??= window.buf
      expect(window.buf).toBe(first)
    }
    expect(window.buf.length).toBe(4 << 20)
  })

  it('give the same damage events on packs with flipped bytes, a cut tail and a broken header', () => {
    const rng = makeRng(11)
    const work = tmpDir('ckpt-scan-compact-damage-')
    for (let t = 0; t < 12; t++) {
      const src = packFiles[t % packFiles.length]!
      const f = path.join(work, path.basename(src))
      const bytes = Buffer.from(fs.readFileSync(src))
      if (t % 4 === 3) bytes[rng.int(0, 8)]! ^= 0xff
      else for (let k = 0; k < 1 + (t % 3); k++) bytes[rng.int(16, bytes.length - 64)]! ^= 0xff
      fs.writeFileSync(f, t % 5 === 4 ? bytes.subarray(0, bytes.length - rng.int(1, 2000)) : bytes)
      const events = same(f, { sealed: true })
      same(f, { end: bytes.length + 100 })
      expect(events.some((e) => ['damage', 'bad-header', 'bad-footer'].includes((e as { kind?: string }).kind ?? ''))).toBe(true)
    }
  })

  it('with prove, mark exactly the entries stored whole whose content hashes to their CID', () => {
    const work = tmpDir('ckpt-scan-compact-prove-')
    const src = packFiles[0]!
    const c = scanPackCompact(src, packNo(src), { sealed: true, prove: true })
    let whole = 0
    for (let i = 0; i < c.count; i++) {
      const expected = c.kind[i] !== ENTRY_KIND.record && c.codec[i] !== 3 ? 1 : 0
      expect(c.proven![i], `entry ${i}`).toBe(expected)
      whole += expected
    }
    expect(whole).toBeGreaterThan(10)
    // a payload byte changed and the entry's checksum made to match: intact as an entry, not proven
    const bytes = Buffer.from(fs.readFileSync(src))
    const k = [...c.codec].findIndex((codec, i) => codec !== 3 && c.kind[i] !== ENTRY_KIND.record && c.stored[i]! > 8)
    const at = c.offsets[k]!
    bytes[at + ENTRY_HEADER_SIZE + 3]! ^= 0x40
    let crc = crc32(bytes.subarray(at, at + 48))
    crc = crc32(bytes.subarray(at + ENTRY_HEADER_SIZE, at + ENTRY_HEADER_SIZE + c.stored[k]!), crc)
    bytes.writeUInt32LE(crc >>> 0, at + 48)
    const f = path.join(work, path.basename(src))
    fs.writeFileSync(f, bytes)
    const d = scanPackCompact(f, packNo(f), { sealed: true, prove: true })
    expect(d.count).toBe(c.count)
    expect(d.proven![k]).toBe(0)
    expect([...d.proven!].filter((p, i) => p !== c.proven![i])).toEqual([0])
    expect([...compactEvents(d)].filter((e) => e.kind === 'entry' && e.entry.proven).length).toBe(whole - 1)
  })

  /** The pack scanned in `parts` parts (as verify splits a large pack between its workers), joined; undefined where they do not join. */
  function inParts(file: string, parts: number, opts: { sealed?: boolean; end?: number; prove?: boolean }): CompactScan | undefined {
    const length = opts.end ?? fs.statSync(file).size
    return joinScans(splitPack(16, length, parts).map((part) => scanPackCompact(file, packNo(file), { ...opts, ...part })))
  }

  it('scanned in parts and joined, give the events of the whole scan, proofs included', () => {
    for (const f of packFiles) {
      const sealed = f !== packFiles[packFiles.length - 1]
      const whole = plain(compactEvents(scanPackCompact(f, packNo(f), { sealed })))
      // down to parts far smaller than an entry: parts where no entry starts join as empty ones
      for (const parts of [2, 3, 7, 40, 200]) {
        const joined = inParts(f, parts, { sealed })
        expect(joined, `${path.basename(f)} in ${parts} parts`).toBeDefined()
        expect(plain(compactEvents(joined!))).toEqual(whole)
      }
      const proved = scanPackCompact(f, packNo(f), { sealed, prove: true })
      const joined = inParts(f, 5, { sealed, prove: true })!
      expect([...joined.proven!]).toEqual([...proved.proven!])
      expect(joined.count).toBe(proved.count)
    }
  })

  it('scanned in parts, do not join where there is damage (the whole scan then reports it)', () => {
    const rng = makeRng(23)
    const work = tmpDir('ckpt-scan-parts-damage-')
    let damagedRuns = 0
    for (let t = 0; t < 40; t++) {
      const src = packFiles[t % packFiles.length]!
      const f = path.join(work, `${t}-${path.basename(src)}`)
      const bytes = Buffer.from(fs.readFileSync(src))
      bytes[rng.int(16, bytes.length - 40)]! ^= 1 << rng.int(0, 8)
      fs.writeFileSync(f, bytes)
      const whole = plain(scanPackFile(f, packNo(f), { sealed: true }))
      const hurt = whole.some((e) => ['damage', 'bad-footer'].includes((e as { kind?: string }).kind ?? ''))
      for (const parts of [2, 5, 13]) {
        const joined = inParts(f, parts, { sealed: true })
        // joined only where the whole scan finds nothing wrong, and then the same events
        if (hurt) expect(joined, `pack ${t} in ${parts} parts`).toBeUndefined()
        else if (joined) expect(plain(compactEvents(joined))).toEqual(whole)
      }
      if (hurt) damagedRuns++
    }
    expect(damagedRuns).toBeGreaterThan(30)
  })

  it('scanned in parts, do not join when a part seeks to a false entry inside a payload', () => {
    // a raw chunk whose payload holds a whole valid entry (header, payload and checksum): a part
    // that starts seeking before it finds that entry, which the previous part does not end at
    const src = packFiles[0]!
    const c = scanPackCompact(src, packNo(src), { sealed: true })
    const k = [...c.stored].findIndex((n, i) => n >= 4096 && c.cids[i * 36 + 1] === 0x55)
    expect(k).toBeGreaterThanOrEqual(0)
    const bytes = Buffer.from(fs.readFileSync(src))
    const at = c.offsets[k]!
    const next = c.offsets[k + 1]!
    // the fake entry: a copy of the next (short) entry, placed inside k's payload with its checksum kept
    const shortK = [...c.stored].findIndex((n, i) => i > 0 && n < 1000)
    const fake = bytes.subarray(c.offsets[shortK]!, c.offsets[shortK]! + ENTRY_HEADER_SIZE + c.stored[shortK]!)
    const fakeAt = at + ENTRY_HEADER_SIZE + 100
    fake.copy(bytes, fakeAt)
    // k's checksum made to hold again: the pack is intact, its chunk k merely holds entry-like bytes
    let crc = crc32(bytes.subarray(at, at + 48))
    crc = crc32(bytes.subarray(at + ENTRY_HEADER_SIZE, next), crc)
    bytes.writeUInt32LE(crc >>> 0, at + 48)
    const f = path.join(tmpDir('ckpt-scan-parts-false-'), path.basename(src))
    fs.writeFileSync(f, bytes)
    const whole = plain(scanPackFile(f, packNo(f), { sealed: true }))
    expect(whole.some((e) => (e as { kind?: string }).kind === 'damage')).toBe(false)
    // two parts split just before the fake entry: the second seeks to it
    const length = bytes.length
    const parts = [{ stopAfter: fakeAt - 10 }, { start: fakeAt - 10, seek: true }]
    const scans = parts.map((part) => scanPackCompact(f, packNo(f), { sealed: true, ...part }))
    expect(scans[1]!.from).toBe(fakeAt)
    expect(joinScans(scans)).toBeUndefined()
    expect(length).toBeGreaterThan(fakeAt)
  })
})
