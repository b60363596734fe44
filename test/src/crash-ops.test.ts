/**
 * kill -9 during an import, a repair, a thin and a gc, at many moments. After each kill the
 * store opens and verify --deep finds nothing wrong (at most notes: packs set aside at open); an
 * import is all or nothing (no bundle checkpoint, or all of them); running the operation again
 * completes it, and every checkpoint restores byte-identical. A thin is all or nothing too; after a
 * gc every live checkpoint restores, and gc again reclaims what the killed one had not.
 */
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { blake3 } from '@noble/hashes/blake3.js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { exportBundle, fileSource, importBundle, openStore, repairStore, verifyStore, type CkptStore } from '../../src/index.js'
import { LevelKV } from '../../store/level-kv.js'
import { blockRange } from '../../store/keys.js'
import { makeRng } from '../helpers/rng.js'
import { removeTmpDirs, tmpDir } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), '../helpers/crash-ops.mjs')
const REGIONS = { ram: { size: 1 << 20, chunkSize: 4096 } }
let src: string
let bundle: string
let cids: string[] = []
const expected = new Map<string, string>()

async function digestOf(store: CkptStore, cid: string): Promise<string> {
  const out = new Uint8Array(REGIONS.ram.size)
  await store.restore(cid, 'ram', out)
  return Buffer.from(blake3(out)).toString('hex')
}

beforeAll(async () => {
  const root = tmpDir('ckpt-crashops-')
  src = path.join(root, 'src')
  bundle = path.join(root, 'b.car')
  const store = await openStore(src, { packTargetSize: 512 << 10 })
  const rng = makeRng(77)
  const ram = Buffer.alloc(REGIONS.ram.size)
  for (let i = 0; i < ram.length; i += 4096) if (rng.chance(0.7)) ram.set(rng.bytes(4096), i)
  const tl = await store.timeline('rec', { regions: REGIONS })
  for (let k = 0; k < 40; k++) {
    const dirty = k === 0 ? undefined : Array.from({ length: 20 }, () => rng.int(0, 256))
    for (const p of dirty ?? []) ram.set(rng.bytes(4096), p * 4096)
    const ck = await tl.checkpoint({ vtime: k, regions: { ram: { data: ram, dirty } } })
    cids.push(ck.cid.toString())
  }
  for (const c of cids) expected.set(c, await digestOf(store, c))
  const parts: Uint8Array[] = []
  for await (const p of exportBundle(store, cids)) parts.push(p)
  fs.writeFileSync(bundle, Buffer.concat(parts))
  await store.close()
}, 60_000)

function killAfter(args: string[], delay: number, env: Record<string, string> = {}): Promise<{ done: boolean; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
    let out = ''
    let stderr = ''
    let timer: NodeJS.Timeout | undefined
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (d: string) => {
      out += d
      if (out.includes('READY')) timer ??= setTimeout(() => child.kill('SIGKILL'), delay)
    })
    child.stderr.on('data', (d) => (stderr += d))
    child.on('error', reject)
    child.on('close', () => {
      clearTimeout(timer)
      resolve({ done: out.includes('DONE'), stderr })
    })
  })
}

async function expectSound(dir: string): Promise<void> {
  const store = await openStore(dir, { mustExist: true })
  try {
    const it = verifyStore(store, { deep: true })
    let r = await it.next()
    for (; !r.done; r = await it.next()) expect(r.value.severity, `${r.value.kind}: ${r.value.message}`).toBe('info')
    expect(r.value.errors + r.value.warnings).toBe(0)
  } finally {
    await store.close()
  }
}

async function catalogued(dir: string): Promise<string[]> {
  const store = await openStore(dir, { mustExist: true })
  try {
    const out: string[] = []
    for await (const e of store.log('rec')) out.push(e.cid.toString())
    return out
  } finally {
    await store.close()
  }
}

describe('kill -9 during an import', () => {
  for (let t = 0; t < 8; t++) {
    const delay = [0, 30, 80, 150, 250, 400, 600, 900][t]!
    it(`trial ${t}: killed ${delay} ms in${t % 2 ? ', blocks committed in small steps' : ''}`, async () => {
      const dir = path.join(tmpDir('ckpt-kill-import-'), 'store')
      const run = await killAfter(['import', dir, bundle], delay, t % 2 ? { CKPT_TEST_STAGE_LIMIT: String(256 << 10) } : {})
      if (!fs.existsSync(path.join(dir, 'CKPT'))) return // killed before the store existed
      await expectSound(dir)
      const got = await catalogued(dir)
      // all or nothing
      expect(got.length === 0 || got.length === cids.length, `${got.length} of ${cids.length} visible`).toBe(true)
      if (run.done) expect(got.length).toBe(cids.length)
      // importing again completes it
      const store = await openStore(dir)
      try {
        await importBundle(store, fileSource(bundle))
        for (const c of cids) expect(await digestOf(store, c)).toBe(expected.get(c))
      } finally {
        await store.close()
      }
      await expectSound(dir)
    }, 60_000)
  }
})

describe('kill -9 during a repair', () => {
  for (let t = 0; t < 6; t++) {
    const delay = [20, 60, 120, 200, 350, 600][t]!
    it(`trial ${t}: killed ${delay} ms into repair --from --rebuild-index`, async () => {
      const dir = path.join(tmpDir('ckpt-kill-repair-'), 'store')
      fs.cpSync(src, dir, { recursive: true })
      // damage: flipped pack bytes and lost index entries
      const rng = makeRng(500 + t)
      const packs = fs.readdirSync(path.join(dir, 'packs')).filter((f) => f.endsWith('.pack'))
      const file = path.join(dir, 'packs', rng.pick(packs))
      const fd = fs.openSync(file, 'r+')
      for (let k = 0; k < 3; k++) fs.writeSync(fd, Buffer.from([rng.int(0, 256)]), 0, 1, rng.int(16, fs.statSync(file).size - 40))
      fs.closeSync(fd)
      const kv = await LevelKV.open(path.join(dir, 'index'))
      const keys: Uint8Array[] = []
      for await (const [k] of kv.iterate(blockRange)) keys.push(k)
      await kv.batch([0, 1, 2].map(() => ({ type: 'del' as const, key: rng.pick(keys) })), { sync: true })
      await kv.close()
      await killAfter(['repair', dir, bundle], delay)
      // the store opens and verify runs; running the repair again heals it completely
      const store = await openStore(dir, { mustExist: true })
      try {
        const it = verifyStore(store, {})
        let r = await it.next()
        while (!r.done) r = await it.next()
      } finally {
        await store.close()
      }
      const s = await repairStore(dir, { from: bundle, rebuildIndex: true })
      expect(s.after.errors + s.after.warnings).toBe(0)
      const healed = await openStore(dir, { mustExist: true })
      try {
        for (const c of cids) expect(await digestOf(healed, c)).toBe(expected.get(c))
      } finally {
        await healed.close()
      }
    }, 60_000)
  }
})

describe('kill -9 during a thin', () => {
  for (let t = 0; t < 6; t++) {
    const delay = [0, 40, 90, 150, 220, 320][t]!
    it(`trial ${t}: killed ${delay} ms in`, async () => {
      const dir = path.join(tmpDir('ckpt-kill-thin-'), 'store')
      fs.cpSync(src, dir, { recursive: true })
      const run = await killAfter(['thin', dir, '4@20,last=3'], delay)
      await expectSound(dir)
      const got = await catalogued(dir)
      // all or nothing: the whole catalog, or exactly what the policy keeps
      const { parsePolicy, planKeep } = await import('../../src/index.js')
      const keep = planKeep(cids.map((_, k) => ({ vtime: BigInt(k) })), parsePolicy('4@20,last=3'))
      const thinned = cids.filter((_, k) => keep[k])
      expect(got, `${got.length} visible`).toEqual(got.length === cids.length ? cids : thinned)
      if (run.done) expect(got).toEqual(thinned)
      const store = await openStore(dir, { mustExist: true })
      try {
        for (const c of got) expect(await digestOf(store, c)).toBe(expected.get(c))
      } finally {
        await store.close()
      }
    }, 60_000)
  }
})

describe('kill -9 during a gc', () => {
  let thinned: string
  const catalog: string[] = []
  let live: string[] = []
  beforeAll(async () => {
    thinned = path.join(tmpDir('ckpt-gc-src-'), 'store')
    fs.cpSync(src, thinned, { recursive: true })
    const store = await openStore(thinned, { mustExist: true })
    await store.thin('rec', '8@40,last=4')
    await store.setRef('pin', cids[3]!)
    for await (const e of store.log('rec')) catalog.push(e.cid.toString())
    live = [...new Set([...catalog, cids[3]!])]
    await store.close()
  }, 60_000)

  for (let t = 0; t < 10; t++) {
    const delay = [0, 10, 20, 35, 50, 70, 90, 110, 140, 180][t]!
    it(`trial ${t}: killed ${delay} ms in${t % 2 ? ' (threshold 100%)' : ''}`, async () => {
      const dir = path.join(tmpDir('ckpt-kill-gc-'), 'store')
      fs.cpSync(thinned, dir, { recursive: true })
      const threshold = t % 2 ? 1 : 0.5
      await killAfter(['gc', dir, String(threshold)], delay)
      await expectSound(dir)
      expect(await catalogued(dir)).toEqual(catalog)
      const store = await openStore(dir, { mustExist: true })
      try {
        for (const c of live) expect(await digestOf(store, c)).toBe(expected.get(c))
        // gc again finishes the job: at 100% nothing dead is left
        await store.gc({ threshold: 1 })
        const s = await store.gc({ threshold: 1, dryRun: true })
        expect(s.deadBytes).toBe(0)
        expect(s.packsRewritten + s.packsDeleted).toBe(0)
        for (const c of live) expect(await digestOf(store, c)).toBe(expected.get(c))
      } finally {
        await store.close()
      }
      await expectSound(dir)
    }, 60_000)
  }
})
