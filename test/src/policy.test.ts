/**
 * Retention policies: the parser, planKeep against an independent model over random vtime sequences
 * and policies, thin() and its dry run on a store, and a timeline that thins itself after each
 * checkpoint ending where one thin of the whole recording ends.
 */
import { describe, expect, it } from 'vitest'
import { memoryBackend, openStore, parsePolicy, planKeep, type CkptStore } from '../../src/index.js'
import { makeRng, type Rng } from '../helpers/rng.js'

const MS = 1_000_000n
const S = 1_000_000_000n

describe('parsePolicy', () => {
  it('reads rules with units, all@, last=N and inf, sorted by horizon', () => {
    const p = parsePolicy('100ms@10s, 10ms@1s,1s@1m,last=5,all@100us')
    expect(p.rules).toEqual([
      { interval: 0n, horizon: 100_000n },
      { interval: 10n * MS, horizon: S },
      { interval: 100n * MS, horizon: 10n * S },
      { interval: S, horizon: 60n * S },
    ])
    expect(p.keepLast).toBe(5)
    expect(p.text).toBe(`all@100000,${10n * MS}@${S},${100n * MS}@${10n * S},${S}@${60n * S},last=5`)
    expect(parsePolicy(p.text)).toEqual(p)
    expect(parsePolicy('1h@inf').rules).toEqual([{ interval: 3_600n * S, horizon: 1n << 64n }])
    expect(parsePolicy('1000@50000').rules).toEqual([{ interval: 1000n, horizon: 50000n }])
    expect(parsePolicy('1d@7d').rules[0]!.interval).toBe(86_400n * S)
    expect(parsePolicy('last=3')).toMatchObject({ rules: [], keepLast: 3 })
  })

  for (const bad of ['', ' ', '10ms', '10ms@', '@1s', '0@1s', '10ms@0', '10xs@1s', '1s@1m,2s@1m', 'last=', 'last=x', '10ms@1s@2s', '-1@5', '1.5s@1m']) {
    it(`rejects ${JSON.stringify(bad)} with CKPT_BAD_ARGUMENT`, () => {
      expect(() => parsePolicy(bad)).toThrow(expect.objectContaining({ code: 'CKPT_BAD_ARGUMENT' }))
    })
  }
})

// ---------------------------------------------------------------- the model

interface ModelRule {
  interval: bigint
  horizon: bigint
}

/** What a policy keeps, written from the definition (SPEC.md §13) and not from planKeep's loop. */
function model(vtimes: bigint[], prot: boolean[], rules: ModelRule[], last: number): boolean[] {
  const now = vtimes[vtimes.length - 1]!
  const keep = vtimes.map((_, i) => prot[i] === true || i >= vtimes.length - Math.max(1, last))
  vtimes.forEach((v, i) => {
    const age = now - v
    const fits = rules.filter((r) => age <= r.horizon)
    if (fits.length === 0) return
    const rule = fits.reduce((a, b) => (b.horizon < a.horizon ? b : a))
    // kept: the oldest checkpoint of its bucket, whatever rule the older ones fall under
    if (rule.interval === 0n || !vtimes.some((w) => w < v && w / rule.interval === v / rule.interval)) keep[i] = true
  })
  return keep
}

/** The catalog after thinning by the policy after every checkpoint, from the model. */
function modelAfterEach(vtimes: bigint[], prot: boolean[], rules: ModelRule[], last: number): bigint[] {
  let live: number[] = []
  for (let i = 0; i < vtimes.length; i++) {
    live.push(i)
    const k = model(
      live.map((j) => vtimes[j]!),
      live.map((j) => prot[j]!),
      rules,
      last,
    )
    live = live.filter((_, j) => k[j])
  }
  return live.map((j) => vtimes[j]!)
}

function randomRules(rng: Rng): { rules: ModelRule[]; last: number; spec: string } {
  const rules: ModelRule[] = []
  const n = rng.int(0, 5)
  const horizons = new Set<bigint>()
  for (let k = 0; k < n; k++) {
    const horizon = BigInt(rng.int(1, 5000))
    if (horizons.has(horizon)) continue
    horizons.add(horizon)
    rules.push({ interval: rng.chance(0.15) ? 0n : BigInt(rng.int(1, 400)), horizon })
  }
  const last = rules.length === 0 || rng.chance(0.3) ? rng.int(1, 6) : 0
  const spec = [...rules.map((r) => `${r.interval === 0n ? 'all' : r.interval}@${r.horizon}`), ...(last ? [`last=${last}`] : [])].join(',')
  return { rules, last, spec }
}

function randomVtimes(rng: Rng): bigint[] {
  const out: bigint[] = []
  let t = BigInt(rng.int(0, 1000))
  const n = rng.int(1, 300)
  const step = rng.pick([1, 3, 10, 50])
  for (let i = 0; i < n; i++) {
    out.push(t)
    t += BigInt(rng.int(1, step * 2))
  }
  return out
}

describe('planKeep against the model', () => {
  it('agrees on 2,000 random sequences and policies', () => {
    const rng = makeRng(20261201)
    for (let trial = 0; trial < 2000; trial++) {
      const vt = randomVtimes(rng)
      const prot = vt.map(() => rng.chance(0.05))
      const { rules, last, spec } = randomRules(rng)
      const got = planKeep(
        vt.map((v, i) => ({ vtime: v, protected: prot[i] })),
        parsePolicy(spec),
      )
      expect(got, `trial ${trial}: policy ${spec}, vtimes ${vt.join(' ')}`).toEqual(model(vt, prot, rules, last))
    }
  })

  it('with intervals that divide each other, thinning after every checkpoint ends where one thin ends', () => {
    const rng = makeRng(99)
    for (let trial = 0; trial < 150; trial++) {
      const vt = randomVtimes(rng)
      const prot = vt.map(() => rng.chance(0.03))
      // nested: each interval a multiple of the previous, horizons increasing
      let interval = BigInt(rng.int(1, 5))
      let horizon = interval * BigInt(rng.int(2, 20))
      const rules: ModelRule[] = []
      for (let k = rng.int(1, 4); k > 0; k--) {
        rules.push({ interval: rng.chance(0.1) && rules.length === 0 ? 0n : interval, horizon })
        interval *= BigInt(rng.int(2, 6))
        horizon = horizon * BigInt(rng.int(2, 10)) + interval
      }
      const last = rng.chance(0.3) ? rng.int(1, 4) : 0
      const batch = model(vt, prot, rules, last)
      expect(modelAfterEach(vt, prot, rules, last), `trial ${trial}`).toEqual(vt.filter((_, i) => batch[i]))
    }
  })

  it('keeps O(log) checkpoints of a long dense recording under a geometric policy', () => {
    const p = parsePolicy('10ms@1s,100ms@10s,1s@1m,10s@1h')
    // 10 minutes at one checkpoint per millisecond
    const list = Array.from({ length: 600_000 }, (_, i) => ({ vtime: BigInt(i) * MS }))
    const kept = planKeep(list, p).filter(Boolean).length
    // 100 in the last second + 90 in the last 10 s + 50 in the last minute + 54 in the last 10 min (+ bucket edges)
    expect(kept).toBeGreaterThanOrEqual(290)
    expect(kept).toBeLessThanOrEqual(300)
  })
})

// ---------------------------------------------------------------- on a store

const REGIONS = { ram: { size: 64 << 10, chunkSize: 4096 } }

async function record(store: CkptStore, name: string, vtimes: bigint[], labels: Set<number> = new Set(), policy?: string): Promise<string[]> {
  const tl = await store.timeline(name, { regions: REGIONS, policy })
  const ram = new Uint8Array(REGIONS.ram.size)
  const cids: string[] = []
  for (let i = 0; i < vtimes.length; i++) {
    ram[(i * 4096 + i) % ram.length] = (i % 255) + 1
    const ck = await tl.checkpoint({ vtime: vtimes[i]!, regions: { ram: { data: ram } }, meta: labels.has(i) ? { label: `l${i}` } : {} })
    cids.push(ck.cid.toString())
  }
  return cids
}

async function logOf(store: CkptStore, name: string): Promise<string[]> {
  const out: string[] = []
  for await (const e of store.log(name)) out.push(`${e.vtime}:${e.cid}`)
  return out
}

describe('thin on a store', () => {
  it('drops what the policy drops, keeps labelled and ref-named checkpoints, and a dry run changes nothing', async () => {
    const store = await openStore('memory:thin', { backend: memoryBackend(), threads: 0 })
    try {
      const vt = Array.from({ length: 120 }, (_, i) => BigInt(i) * 7n)
      const cids = await record(store, 'a', vt, new Set([5, 40]))
      await store.setRef('keepme', cids[17]!)
      const before = await logOf(store, 'a')
      const spec = '20@200,100@inf'
      const dry = await store.thin('a', spec, { dryRun: true })
      expect(dry.dryRun).toBe(true)
      expect(await logOf(store, 'a')).toEqual(before)
      const prot = vt.map((_, i) => i === 5 || i === 40 || i === 17)
      const want = model(vt, prot, parsePolicy(spec).rules, 0)
      expect(dry.kept.map((e) => e.cid.toString())).toEqual(cids.filter((_, i) => want[i]))
      expect(dry.dropped.map((e) => e.cid.toString())).toEqual(cids.filter((_, i) => !want[i]))
      const real = await store.thin('a', spec)
      expect(real.dropped.map((e) => e.cid.toString())).toEqual(dry.dropped.map((e) => e.cid.toString()))
      const after = await logOf(store, 'a')
      expect(after).toEqual(before.filter((_, i) => want[i]))
      for (const i of [5, 17, 40, 119]) expect(after).toContain(`${vt[i]}:${cids[i]}`)
      // thinning again by the same policy drops nothing more
      expect((await store.thin('a', spec)).dropped).toHaveLength(0)
      await expect(store.thin('nope', spec)).rejects.toMatchObject({ code: 'CKPT_NOT_FOUND' })
      await expect(store.thin('a', '5@')).rejects.toMatchObject({ code: 'CKPT_BAD_ARGUMENT' })
    } finally {
      await store.close()
    }
  })

  it('a timeline that thins itself after each checkpoint ends where one thin of the whole recording ends', async () => {
    const rng = makeRng(5)
    for (const [k, spec] of ['10@100,100@1000,1000@inf', '4@40,20@400,last=3', 'all@30,10@300'].entries()) {
      const vt: bigint[] = []
      let t = 0n
      for (let i = 0; i < 250; i++) vt.push((t += BigInt(rng.int(1, 6))))
      const labels = new Set([rng.int(0, 250), rng.int(0, 250)])
      const a = await openStore(`memory:auto${k}`, { backend: memoryBackend(), threads: 0 })
      const b = await openStore(`memory:once${k}`, { backend: memoryBackend(), threads: 0 })
      try {
        await record(a, 'rec', vt, labels, spec)
        await record(b, 'rec', vt, labels)
        await b.thin('rec', spec)
        // the vtimes agree (the CIDs differ: each store gives its timeline a lineage of its own)
        const auto = (await logOf(a, 'rec')).map((l) => l.split(':')[0])
        expect(auto).toEqual((await logOf(b, 'rec')).map((l) => l.split(':')[0]))
        const p = parsePolicy(spec)
        const prot = vt.map((_, i) => labels.has(i))
        expect(auto).toEqual(modelAfterEach(vt, prot, p.rules, p.keepLast).map(String))
        expect(auto.length).toBeLessThan(120)
        expect((await a.timeline('rec')).policy).toBe(parsePolicy(spec).text)
      } finally {
        await a.close()
        await b.close()
      }
    }
  })

  it('a policy set on an existing timeline, and cleared, is kept in its record', async () => {
    const dir = (await import('../helpers/tmp.js')).tmpStorePath('ckpt-policy-')
    let store = await openStore(dir, { threads: 0 })
    await record(store, 'r', [1n, 2n, 3n])
    expect(await store.setPolicy('r', 'last=2')).toBe('last=2')
    await store.close()
    store = await openStore(dir, { threads: 0 })
    try {
      const tl = await store.timeline('r')
      expect(tl.policy).toBe('last=2')
      const ram = new Uint8Array(REGIONS.ram.size).fill(9)
      const ck = await tl.checkpoint({ vtime: 4n, regions: { ram: { data: ram } } })
      expect(ck.stats.thinned).toBe(2)
      expect((await logOf(store, 'r')).map((l) => l.split(':')[0])).toEqual(['3', '4'])
      expect(await store.setPolicy('r', null)).toBe(null)
      expect((await store.timeline('r')).policy).toBeUndefined()
      await expect(store.setPolicy('zz', 'last=1')).rejects.toMatchObject({ code: 'CKPT_NOT_FOUND' })
    } finally {
      await store.close()
    }
  })
})
