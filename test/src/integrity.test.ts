/**
 * Integrity under injected faults. A store of 200 checkpoints (small packs, so several are sealed) is
 * copied per seed and damaged one way: bytes flipped in a pack, a pack truncated or deleted, a pack
 * header broken, index entries deleted or garbled, bytes flipped in the LevelDB files. Then:
 *   - verify --deep finds the fault (every one that changed anything) and never crashes;
 *   - no read returns wrong bytes: every checkpoint either reads back exactly or fails with a
 *     CKPT_* read error; every one that fails is named by verify, and read from the packs alone (the
 *     leaf files removed) the ones that fail are exactly the ones verify names;
 *   - repair --from a bundle exported beforehand (plus --rebuild-index for index damage) heals the
 *     store: verify is clean again and every checkpoint reads back exactly.
 */
import fs from 'node:fs'
import path from 'node:path'
import { blake3 } from '@noble/hashes/blake3.js'
import { CID } from 'multiformats/cid'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { exportBundle, openStore, repairStore, type CkptStore, type Finding, type VerifySummary } from '../../src/index.js'
import { LevelKV } from '../../store/level-kv.js'
import { blockRange } from '../../store/keys.js'
import { makeRng, type Rng } from '../helpers/rng.js'
import { removeTmpDirs, tmpDir } from '../helpers/tmp.js'
import { runVerify } from '../helpers/verify.js'

afterAll(removeTmpDirs)

const REGIONS = { ram: { size: 128 * 1024, chunkSize: 4096 }, disk: { size: 256 * 1024, chunkSize: 16384 } }
const N = 200
const READ_ERRORS = ['CKPT_HASH_MISMATCH', 'CKPT_BAD_PACK', 'CKPT_NOT_FOUND', 'CKPT_BAD_INDEX', 'CKPT_BAD_NODE', 'CKPT_BAD_MANIFEST', 'CKPT_BAD_CID']

let base: string
let backup: string
let cids: string[] = []
/** digest of what each checkpoint reads back as (regions and blob) */
const expected = new Map<string, string>()

async function fingerprint(store: CkptStore, cid: string): Promise<string> {
  const h = blake3.create()
  for (const [name, g] of Object.entries(REGIONS)) {
    const out = new Uint8Array(g.size)
    await store.restore(cid, name, out)
    h.update(out)
  }
  h.update(await store.readBlob(cid, 'cpu'))
  return Buffer.from(h.digest()).toString('hex')
}

/** Reads every checkpoint: each reads back exactly or fails with a CKPT_* read error; returns those that fail. */
async function readAll(store: CkptStore): Promise<Set<string>> {
  const failing = new Set<string>()
  for (const c of cids) {
    try {
      expect(await fingerprint(store, c), `checkpoint ${c} read back different bytes`).toBe(expected.get(c))
    } catch (err) {
      const code = (err as { code?: string }).code
      if (code === undefined) throw err
      expect(READ_ERRORS, (err as Error).message).toContain(code)
      failing.add(c)
    }
  }
  return failing
}

function mutate(rng: Rng, buf: Buffer, chunk: number, n: number): number[] {
  const dirty = new Set<number>()
  for (let k = 0; k < n; k++) {
    const i = rng.int(0, buf.length / chunk)
    if (rng.chance(0.3)) buf.fill(0, i * chunk, (i + 1) * chunk)
    else buf.set(rng.bytes(chunk), i * chunk)
    dirty.add(i)
  }
  return [...dirty]
}

beforeAll(async () => {
  const root = tmpDir('ckpt-integrity-')
  base = path.join(root, 'base')
  backup = path.join(root, 'backup.car')
  const store = await openStore(base, { packTargetSize: 256 << 10 })
  const rng = makeRng(2024)
  const ram = Buffer.alloc(REGIONS.ram.size)
  const disk = Buffer.alloc(REGIONS.disk.size)
  mutate(rng, ram, 4096, 20)
  mutate(rng, disk, 16384, 8)
  const tl = await store.timeline('vm', { regions: REGIONS })
  for (let k = 0; k < N; k++) {
    const regions: Record<string, { data: Buffer; dirty?: number[] }> = k === 0 ? { ram: { data: ram }, disk: { data: disk } } : { ram: { data: ram, dirty: mutate(rng, ram, 4096, rng.int(1, 4)) } }
    if (k > 0 && rng.chance(0.2)) regions.disk = { data: disk, dirty: mutate(rng, disk, 16384, 1) }
    const ck = await tl.checkpoint({ vtime: k * 1000, regions, blobs: k % 25 === 0 ? { cpu: rng.bytes(rng.int(50, 5000)) } : undefined })
    cids.push(ck.cid.toString())
  }
  for (const c of cids) expected.set(c, await fingerprint(store, c))
  const parts: Uint8Array[] = []
  for await (const p of exportBundle(store, cids)) parts.push(p)
  fs.writeFileSync(backup, Buffer.concat(parts))
  await store.close()
}, 120_000)

function copyStore(to: string): void {
  fs.cpSync(base, to, { recursive: true })
}

function packs(dir: string): string[] {
  return fs
    .readdirSync(path.join(dir, 'packs'))
    .filter((f) => f.endsWith('.pack'))
    .sort()
    .map((f) => path.join(dir, 'packs', f))
}

async function dumpIndex(dir: string): Promise<string[]> {
  const kv = await LevelKV.open(path.join(dir, 'index'))
  try {
    const out: string[] = []
    for await (const [k, v] of kv.iterate({})) out.push(Buffer.from(k).toString('hex') + '=' + Buffer.from(v).toString('hex'))
    return out
  } finally {
    await kv.close()
  }
}


type Fault = { kind: string; apply: (dir: string, rng: Rng) => Promise<(f: Finding[]) => boolean> }

const FAULTS: Fault[] = [
  {
    kind: 'flip bytes in a pack',
    async apply(dir, rng) {
      const file = rng.pick(packs(dir))
      const pack = Number.parseInt(path.basename(file), 10)
      const size = fs.statSync(file).size
      const at: number[] = Array.from({ length: rng.int(1, 4) }, () => rng.int(16, size - 32))
      const fd = fs.openSync(file, 'r+')
      for (const x of at) {
        const b = Buffer.alloc(1)
        fs.readSync(fd, b, 0, 1, x)
        b[0]! ^= 1 << rng.int(0, 8)
        fs.writeSync(fd, b, 0, 1, x)
      }
      fs.closeSync(fd)
      return (f) => at.every((x) => f.some((g) => g.pack === pack && g.offset !== undefined && g.length !== undefined && x >= g.offset && x < g.offset + g.length))
    },
  },
  {
    kind: 'truncate a pack',
    async apply(dir, rng) {
      const file = rng.pick(packs(dir))
      const pack = Number.parseInt(path.basename(file), 10)
      fs.truncateSync(file, rng.int(0, fs.statSync(file).size))
      return (f) => f.some((g) => g.pack === pack && g.severity === 'error')
    },
  },
  {
    kind: 'delete a pack',
    async apply(dir, rng) {
      const file = rng.pick(packs(dir))
      const pack = Number.parseInt(path.basename(file), 10)
      fs.rmSync(file)
      return (f) => f.some((g) => g.kind === 'missing-pack' && g.pack === pack)
    },
  },
  {
    kind: 'break a pack header',
    async apply(dir, rng) {
      const file = rng.pick(packs(dir))
      const pack = Number.parseInt(path.basename(file), 10)
      const fd = fs.openSync(file, 'r+')
      const x = rng.int(0, 16)
      const b = Buffer.alloc(1)
      fs.readSync(fd, b, 0, 1, x)
      b[0]! ^= 1 << rng.int(0, 8)
      fs.writeSync(fd, b, 0, 1, x)
      fs.closeSync(fd)
      return (f) => f.some((g) => g.pack === pack && (g.kind === 'bad-pack-header' || g.kind === 'damaged-entry'))
    },
  },
  {
    kind: 'delete index entries',
    async apply(dir, rng) {
      const kv = await LevelKV.open(path.join(dir, 'index'))
      const keys: Uint8Array[] = []
      for await (const [k] of kv.iterate(blockRange)) keys.push(k)
      const gone = Array.from({ length: rng.int(1, 6) }, () => rng.pick(keys))
      await kv.batch(gone.map((key) => ({ type: 'del' as const, key })), { sync: true })
      await kv.close()
      const names = gone.map((k) => Buffer.from(k.subarray(1)).toString('hex'))
      return (f) => names.every((n) => f.some((g) => g.kind === 'unindexed-entry' && g.cid !== undefined && hexOf(g.cid) === n))
    },
  },
  {
    kind: 'garble index values',
    async apply(dir, rng) {
      const kv = await LevelKV.open(path.join(dir, 'index'))
      const keys: Uint8Array[] = []
      for await (const [k] of kv.iterate(blockRange)) keys.push(k)
      const hit = Array.from({ length: rng.int(1, 4) }, () => rng.pick(keys))
      await kv.batch(hit.map((key) => ({ type: 'put' as const, key, value: rng.bytes(rng.chance(0.5) ? 22 : rng.int(1, 30)) })), { sync: true })
      await kv.close()
      const names = hit.map((k) => Buffer.from(k.subarray(1)).toString('hex'))
      return (f) => names.every((n) => f.some((g) => (g.kind === 'bad-index-value' || g.kind === 'dangling-index-entry') && g.cid !== undefined && hexOf(g.cid) === n))
    },
  },
  {
    kind: 'flip bytes in the LevelDB files',
    async apply(dir, rng) {
      const before = await dumpIndex(dir)
      const idx = path.join(dir, 'index')
      const files = fs.readdirSync(idx).filter((f) => /\.(ldb|log)$/.test(f) && fs.statSync(path.join(idx, f)).size > 0).sort()
      const file = path.join(idx, rng.pick(files))
      const size = fs.statSync(file).size
      const fd = fs.openSync(file, 'r+')
      for (let k = 0; k < rng.int(1, 4); k++) {
        const x = rng.int(0, size)
        const b = Buffer.alloc(1)
        fs.readSync(fd, b, 0, 1, x)
        b[0]! ^= 0xff
        fs.writeSync(fd, b, 0, 1, x)
      }
      fs.closeSync(fd)
      let after: string[] | undefined
      try {
        after = await dumpIndex(dir)
      } catch {}
      const changed = after === undefined || after.join() !== before.join()
      // a flip in bytes LevelDB no longer uses changes nothing: there is nothing to find
      return (f) => !changed || f.some((g) => g.severity !== 'info' || g.kind === 'uncatalogued-checkpoint')
    },
  },
]

function hexOf(cid: string): string {
  return Buffer.from(CIDparse(cid)).toString('hex')
}


function CIDparse(s: string): Uint8Array {
  return CID.parse(s).bytes
}

// two of each fault, and four more of the LevelDB one (whose effect varies most)
const SEEDS = [...Array.from({ length: 14 }, (_, i) => i + 1), 20, 27, 34, 41]
const found: Record<string, number> = {}

describe('injected faults: found, never wrong bytes, healed', () => {
  for (const seed of SEEDS) {
    const fault = FAULTS[seed % FAULTS.length]!
    it(`seed ${seed}: ${fault.kind}`, async () => {
      const rng = makeRng(seed * 7919)
      const dir = path.join(tmpDir('ckpt-fault-'), 'store')
      copyStore(dir)
      const detected = await fault.apply(dir, rng)
      let store: CkptStore | undefined
      try {
        store = await openStore(dir, { mustExist: true })
      } catch (err) {
        // damage to the index itself may keep it from opening: that is what verify reports too
        expect((err as { code?: string }).code).toMatch(/^CKPT_(BAD_STORE|BAD_INDEX)$/)
      }
      if (store) {
        let v: { findings: Finding[]; summary: VerifySummary }
        try {
          v = await runVerify(store, { deep: true })
          // found by verify, or by the open itself: a writer that finds its index stale rebuilds it from
          // the packs (which of LevelDB's records a flip hits depends on how its files were compacted)
          const healedAtOpen = store.openNotes.some((n) => n.kind === 'index-rebuilt')
          expect(healedAtOpen || detected(v.findings), `findings: ${v.findings.map((f) => `${f.kind}@${f.pack}:${f.offset}+${f.length}`).join(' ')}; open notes: ${store.openNotes.map((n) => n.kind).join(' ')}`).toBe(true)
          // never wrong bytes; every checkpoint that fails to read is one verify names
          const named = new Set(v.summary.damagedCheckpoints.map((c) => c.cid).filter((c) => cids.includes(c)))
          // when LevelDB itself reports its files corrupt, verify stops: nothing more to name
          const judged = !v.findings.some((f) => f.kind === 'corrupt-index')
          const failing = await readAll(store)
          if (judged) for (const c of failing) expect(named.has(c), `checkpoint ${cids.indexOf(c)} fails to read but verify does not name it`).toBe(true)
          // a named checkpoint may still read in that pass: the leaf file of checkpoint 0's trees offers
          // their leaves (each hashed against its CID), and once proven a leaf is the base of the delta
          // chains of later checkpoints (SPEC §18.1). Verify judges the packs alone; without the leaf
          // files (and with nothing cached) the checkpoints that fail are exactly those it names.
          await store.close()
          store = undefined
          for (const f of fs.readdirSync(path.join(dir, 'scan'))) if (f.endsWith('.leaves')) fs.rmSync(path.join(dir, 'scan', f))
          const cold = await openStore(dir, { mustExist: true })
          try {
            const failingCold = await readAll(cold)
            for (const c of failing) expect(failingCold.has(c), `checkpoint ${cids.indexOf(c)} read without the leaf files only`).toBe(true)
            if (judged) expect([...failingCold].sort()).toEqual([...named].sort())
          } finally {
            await cold.close()
          }
          found[fault.kind] = (found[fault.kind] ?? 0) + 1
        } finally {
          await store?.close()
        }
      } else found[fault.kind] = (found[fault.kind] ?? 0) + 1
      // heal: from the backup bundle, rebuilding the index where the fault was in it
      const indexFault = /index|LevelDB/.test(fault.kind)
      const r = await repairStore(dir, { from: backup, rebuildIndex: indexFault })
      if (r.after.errors || r.after.warnings) {
        const st = await openStore(dir, { mustExist: true })
        try {
          const left = await runVerify(st, { deep: true })
          console.log('LEFT AFTER REPAIR', fault.kind, left.findings.filter((f) => f.severity !== 'info').map((f) => `${f.kind}: ${f.message}`))
        } finally {
          await st.close()
        }
      }
      expect(r.after.errors, JSON.stringify(r.after.advice)).toBe(0)
      expect(r.after.warnings).toBe(0)
      const healed = await openStore(dir, { mustExist: true })
      try {
        for (const c of cids) expect(await fingerprint(healed, c)).toBe(expected.get(c))
        expect((await healed.stats()).checkpoints).toBe(N)
      } finally {
        await healed.close()
      }
    }, 60_000)
  }

  it('every kind of fault was injected and found', () => {
    for (const f of FAULTS) expect(found[f.kind], f.kind).toBeGreaterThan(0)
  })
})
