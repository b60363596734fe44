/**
 * gc never loses a live block, and reclaims what nothing reaches. Random histories of checkpoints
 * (dirty hints, with or without the pages' previous bytes, so some are chunk deltas; reverted pages,
 * blobs, labels), forks, thins, rms, refs, reopens and gcs with random
 * thresholds, against a model of what each live checkpoint holds: after every gc each live
 * checkpoint (catalog entries, refs) restores byte-identical and verify --deep finds no error or
 * warning. A final gc at threshold 100% leaves under 5% of the dead bytes it found.
 */
import { blake3 } from '@noble/hashes/blake3.js'
import { afterAll, describe, expect, it } from 'vitest'
import { memoryBackend, openStore, verifyStore, type CkptStore, type GcSummary, type Timeline } from '../../src/index.js'
import { makeRng, type Rng } from '../helpers/rng.js'
import { removeTmpDirs, tmpStorePath } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

const PAGE = 4096
const PAGES = 64
const REGIONS = { ram: { size: PAGES * PAGE, chunkSize: PAGE } }

interface Content {
  ram: Uint8Array
  cpu?: Uint8Array
}

const hex = (b: Uint8Array) => Buffer.from(blake3(b)).toString('hex')

class History {
  store!: CkptStore
  readonly handles = new Map<string, Timeline>()
  /** what the next checkpoint of each timeline builds on (the handle's head) */
  readonly current = new Map<string, Uint8Array>()
  readonly lastVtime = new Map<string, bigint>()
  /** every checkpoint ever made: its content */
  readonly content = new Map<string, Content>()
  readonly refs = new Map<string, string>()
  readonly pages: Uint8Array[] = []
  forks = 0
  /** chunks the checkpoints stored as chunk deltas */
  deltas = 0
  gcs: GcSummary[] = []

  constructor(
    readonly dir: string,
    readonly rng: Rng,
  ) {}

  async open(): Promise<void> {
    this.store = await openStore(this.dir, { packTargetSize: 96 << 10, threads: this.rng.chance(0.5) ? 0 : 2 })
    this.handles.clear()
    // a reopened timeline builds on its newest catalogued checkpoint
    this.current.clear()
    for (const t of await this.store.listTimelines()) {
      let newest: string | undefined
      for await (const e of this.store.log(t.name, { reverse: true, limit: 1 })) newest = e.cid.toString()
      if (newest) this.current.set(t.name, Uint8Array.prototype.slice.call(this.content.get(newest)!.ram))
    }
  }

  async handle(name: string): Promise<Timeline> {
    let h = this.handles.get(name)
    if (!h) {
      h = await this.store.timeline(name, { regions: REGIONS })
      this.handles.set(name, h)
    }
    return h
  }

  async catalog(): Promise<{ timeline: string; vtime: bigint; cid: string }[]> {
    const out: { timeline: string; vtime: bigint; cid: string }[] = []
    for await (const e of this.store.log()) out.push({ timeline: e.timeline, vtime: e.vtime, cid: e.cid.toString() })
    return out
  }

  async add(name: string): Promise<void> {
    const rng = this.rng
    const tl = await this.handle(name)
    const base = this.current.get(name)
    const ram = base ? Uint8Array.prototype.slice.call(base) : new Uint8Array(REGIONS.ram.size)
    const dirty = new Set<number>()
    const n = base ? rng.int(1, 12) : PAGES
    for (let k = 0; k < n; k++) {
      const p = base ? rng.int(0, PAGES) : k
      dirty.add(p)
      const r = rng.float()
      if (r < 0.2 && this.pages.length) ram.set(rng.pick(this.pages), p * PAGE) // a page seen before
      else if (r < 0.3) ram.fill(0, p * PAGE, (p + 1) * PAGE)
      else if (r < 0.6 && base) ram.set(rng.bytes(8), p * PAGE + rng.int(0, PAGE - 8)) // a few bytes of it rewritten
      else {
        const page = rng.bytes(PAGE)
        this.pages.push(page)
        ram.set(page, p * PAGE)
      }
    }
    const vtime = (this.lastVtime.get(name) ?? -1n) + BigInt(rng.int(1, 40))
    const cpu = rng.chance(0.4) ? rng.bytes(rng.int(10, 9000)) : undefined
    const hints = base && rng.chance(0.8) ? [...dirty].sort((a, b) => a - b) : undefined
    // mostly with the pages' previous bytes: changed pages are then stored as chunk deltas of them
    let previous: Uint8Array | undefined
    if (hints && rng.chance(0.7)) {
      previous = new Uint8Array(hints.length * PAGE)
      hints.forEach((p, k) => previous!.set(base!.subarray(p * PAGE, (p + 1) * PAGE), k * PAGE))
    }
    const ck = await tl.checkpoint({
      vtime,
      regions: { ram: { data: ram, dirty: hints, previous } },
      blobs: cpu ? { cpu } : {},
      meta: rng.chance(0.05) ? { label: `l${vtime}` } : {},
    })
    this.lastVtime.set(name, vtime)
    this.deltas += ck.stats.deltaChunks
    this.current.set(name, ram)
    this.content.set(ck.cid.toString(), { ram, cpu })
  }

  /** Every live checkpoint restores byte-identical; verify --deep finds nothing wrong. */
  async check(): Promise<void> {
    const live = new Set((await this.catalog()).map((e) => e.cid))
    for (const cid of this.refs.values()) live.add(cid)
    const out = new Uint8Array(REGIONS.ram.size)
    for (const cid of live) {
      const want = this.content.get(cid)!
      expect(want, `model knows ${cid}`).toBeDefined()
      await this.store.restore(cid, 'ram', out)
      expect(hex(out), `ram of ${cid}`).toBe(hex(want.ram))
      if (want.cpu) expect(hex(await this.store.readBlob(cid, 'cpu'))).toBe(hex(want.cpu))
    }
    const it = verifyStore(this.store, { deep: true })
    let r = await it.next()
    for (; !r.done; r = await it.next()) expect(r.value.severity, `${r.value.kind}: ${r.value.message}`).toBe('info')
    expect(r.value.errors + r.value.warnings).toBe(0)
  }

  async step(): Promise<void> {
    const rng = this.rng
    const names = [...new Set([...(await this.store.listTimelines()).map((t) => t.name), ...this.handles.keys()])]
    const cat = await this.catalog()
    const r = rng.float()
    if (r < 0.45 || cat.length === 0) {
      const name = names.length === 0 || (names.length < 3 && rng.chance(0.1)) ? `t${names.length}` : rng.pick(names)
      if (!this.current.has(name) && this.handles.has(name)) this.handles.delete(name)
      return this.add(name)
    }
    if (r < 0.52) {
      const from = rng.pick(cat)
      const name = `f${this.forks++}`
      const e = await this.store.fork(name, from.cid)
      expect(e.vtime).toBe(from.vtime)
      this.content.set(e.cid.toString(), this.content.get(from.cid)!)
      this.current.set(name, Uint8Array.prototype.slice.call(this.content.get(from.cid)!.ram))
      this.lastVtime.set(name, from.vtime)
      if (rng.chance(0.3)) await this.store.setPolicy(name, 'all@20,10@100,50@inf')
      return
    }
    if (r < 0.64) {
      const name = rng.pick(names)
      const spec = rng.pick(['last=2', '5@50,50@inf', '10@100', 'all@30,20@200', '3@30,30@300,last=4'])
      const before = cat.filter((e) => e.timeline === name)
      const res = await this.store.thin(name, spec, { dryRun: rng.chance(0.2) })
      const after = (await this.catalog()).filter((e) => e.timeline === name)
      expect(res.kept.length + res.dropped.length).toBe(before.length)
      const droppedSet = new Set(res.dropped.map((d) => `${d.vtime}`))
      expect(after.map((e) => `${e.vtime}`)).toEqual(res.dryRun ? before.map((e) => `${e.vtime}`) : before.filter((e) => !droppedSet.has(`${e.vtime}`)).map((e) => `${e.vtime}`))
      for (const cid of this.refs.values()) expect(res.dropped.map((d) => d.cid.toString())).not.toContain(cid)
      return
    }
    if (r < 0.74) {
      const pinned = new Set(this.refs.values())
      const victims = cat.filter((e) => !pinned.has(e.cid))
      if (!victims.length) return
      const v = rng.pick(victims)
      const gone = await this.store.rm([`${v.timeline}@${v.vtime}`])
      expect(gone.map((g) => g.cid.toString())).toEqual([v.cid])
      // without an open handle (its head stays what it checkpointed last), the timeline's next
      // checkpoint builds on its newest catalogued one, as after a reopen
      if (!this.handles.has(v.timeline)) {
        let newest: string | undefined
        for await (const e of this.store.log(v.timeline, { reverse: true, limit: 1 })) newest = e.cid.toString()
        if (newest) this.current.set(v.timeline, Uint8Array.prototype.slice.call(this.content.get(newest)!.ram))
        else this.current.delete(v.timeline)
      }
      return
    }
    if (r < 0.8) {
      if (this.refs.size && rng.chance(0.5)) {
        const name = rng.pick([...this.refs.keys()])
        expect(await this.store.deleteRef(name)).toBe(true)
        this.refs.delete(name)
      } else {
        const e = rng.pick(cat)
        const name = `r${rng.int(0, 4)}`
        await this.store.setRef(name, e.cid)
        this.refs.set(name, e.cid)
      }
      return
    }
    if (r < 0.85) {
      await this.store.close()
      return this.open()
    }
    const threshold = rng.pick([0, 0.3, 0.5, 0.9, 1])
    const s = await this.store.gc({ threshold })
    this.gcs.push(s)
    expect(s.bytesAfter).toBeLessThanOrEqual(s.bytesBefore + s.rewrittenBytes + 4096)
    await this.check()
  }
}

describe('gc over random histories', () => {
  for (const seed of [1, 2, 3, 4]) {
    it(`seed ${seed}: 90 steps; after every gc the live checkpoints restore and verify --deep is clean`, async () => {
      const h = new History(tmpStorePath('ckpt-gc-'), makeRng(seed * 7919))
      await h.open()
      try {
        for (let i = 0; i < 90; i++) await h.step()
        expect(h.deltas).toBeGreaterThan(0)
        // everything unreferenced goes once every pack with dead bytes is rewritten
        const cat = await h.catalog()
        if (cat.length > 2) {
          for (const e of cat.slice(0, Math.floor(cat.length / 2))) if (![...h.refs.values()].includes(e.cid)) await h.store.rm([`${e.timeline}@${e.vtime}`])
        }
        const s = await h.store.gc({ threshold: 1 })
        await h.check()
        const again = await h.store.gc({ dryRun: true })
        expect(s.deadBytes).toBeGreaterThan(0)
        expect(again.deadBytes, `dead bytes left: ${again.deadBytes} of ${s.deadBytes}`).toBeLessThanOrEqual(0.05 * s.deadBytes)
        expect(again.liveBytes).toBe(s.liveBytes)
        // what is left is the live blocks and the packs' headers and footers
        // (and the catalog records still needed: the snapshot gc wrote and its commits' records)
        expect(again.bytesBefore).toBeLessThanOrEqual(s.liveBytes + again.liveRecordBytes + again.packsBefore * 48 + 1)
        // and it stays so across a reopen
        await h.store.close()
        await h.open()
        await h.check()
        expect(h.gcs.length).toBeGreaterThan(0)
      } finally {
        await h.store.close()
      }
    }, 240_000)
  }

  it('a timeline handle keeps building on its head across a gc, even after its head was removed', async () => {
    const dir = tmpStorePath('ckpt-gc-head-')
    const store = await openStore(dir, { packTargetSize: 64 << 10 })
    try {
      const tl = await store.timeline('a', { regions: REGIONS })
      const rng = makeRng(3)
      const ram = rng.bytes(REGIONS.ram.size)
      await tl.checkpoint({ vtime: 1, regions: { ram: { data: ram } } })
      ram.set(rng.bytes(PAGE), 0)
      const c2 = await tl.checkpoint({ vtime: 2, regions: { ram: { data: ram, dirty: [0] } } })
      await store.rm([c2.cid])
      await store.rm(['a@1'])
      const s = await store.gc({ threshold: 1 })
      // the head's blocks are live while the handle is open
      expect(s.liveBytes).toBeGreaterThan(REGIONS.ram.size * 0.9)
      ram.set(rng.bytes(PAGE), 5 * PAGE)
      const c3 = await tl.checkpoint({ vtime: 3, regions: { ram: { data: ram, dirty: [5] } } })
      const out = new Uint8Array(REGIONS.ram.size)
      await store.restore(c3.cid, 'ram', out)
      expect(hex(out)).toBe(hex(ram))
    } finally {
      await store.close()
    }
  })

  it('the mark hands the event loop back: timers run, a restore reads and a checkpoint pauses while it walks', async () => {
    const dir = tmpStorePath('ckpt-gc-yield-')
    const store = await openStore(dir, { packTargetSize: 64 << 10, threads: 0 })
    try {
      const tl = await store.timeline('a', { regions: REGIONS })
      const rng = makeRng(11)
      const ram = rng.bytes(REGIONS.ram.size)
      const kept = new Map<string, string>()
      const first = await tl.checkpoint({ vtime: 0, regions: { ram: { data: ram } } })
      kept.set(first.cid.toString(), hex(ram))
      // 150 roots: more than two of the mark's slices of 64 whatever the machine's speed
      for (let k = 1; k < 150; k++) {
        const p = rng.int(0, PAGES - 1)
        ram.set(rng.bytes(PAGE), p * PAGE)
        const c = await tl.checkpoint({ vtime: k, regions: { ram: { data: ram, dirty: [p] } } })
        if (k % 10 === 0) kept.set(c.cid.toString(), hex(ram))
      }
      // every other checkpoint goes: the gc has something to sweep
      for (let k = 1; k < 150; k += 2) await store.rm([`a@${k}`])
      let ticks = 0
      let running = true
      const tick = () => {
        ticks++
        if (running) setImmediate(tick)
      }
      setImmediate(tick)
      const during: { ticks: number; done: number }[] = []
      let restored: Promise<string> | undefined
      let paused: ReturnType<Timeline['checkpoint']> | undefined
      const next = Uint8Array.prototype.slice.call(ram)
      next.set(rng.bytes(PAGE), 0)
      let copiedInMark = false
      let expected = ''
      let markDone = false
      const s = await store.gc({
        threshold: 0,
        onProgress: (p) => {
          if (p.phase === 'sweep') markDone = true
          if (p.phase !== 'mark') return
          during.push({ ticks, done: p.done })
          if (p.done === 70) {
            // what an emulator sharing the process does meanwhile: read a checkpoint, take the next one
            setImmediate(() => {
              const [cid, want] = [...kept][3]!
              const out = new Uint8Array(REGIONS.ram.size)
              restored = store.restore(cid, 'ram', out).then(() => (hex(out) === want ? 'same' : 'differs'))
              expected = hex(next)
              paused = tl.checkpoint({ vtime: 1000, regions: { ram: { data: next, dirty: [0] } } })
              // the pause copied the dirty page at once: the emulator may write its memory again
              void paused.copied.then(() => {
                copiedInMark = markDone === false
                next.fill(0xee, 0, PAGE)
              })
            })
          }
        },
      })
      running = false
      const total = during.at(-1)!.done
      expect(total).toBeGreaterThanOrEqual(150 - 75)
      // timers ran between the mark's first and last root, not only before and after it
      expect(during.at(-1)!.ticks).toBeGreaterThan(during[0]!.ticks)
      // the checkpoint and the read were started from inside the mark, before it ended
      expect(restored).toBeDefined()
      expect(paused).toBeDefined()
      expect(await restored).toBe('same')
      const c = await paused!
      expect(copiedInMark).toBe(true)
      expect(s.reclaimedBytes + s.deadBytesKept).toBeGreaterThan(0)
      const out = new Uint8Array(REGIONS.ram.size)
      await store.restore(c.cid, 'ram', out)
      // the checkpoint holds the memory as it was when checkpoint() was called, not as written after
      expect(hex(out)).toBe(expected)
      expect(hex(out)).not.toBe(hex(next))
      const r = await (async () => {
        const it = verifyStore(store, { deep: true })
        let x = await it.next()
        while (!x.done) x = await it.next()
        return x.value
      })()
      expect(r.clean).toBe(true)
    } finally {
      await store.close()
    }
  })

  it('rejects a bad threshold', async () => {
    const store = await openStore('memory:gcbad', { backend: memoryBackend(), threads: 0 })
    try {
      for (const threshold of [-0.1, 1.5, Number.NaN]) await expect(store.gc({ threshold })).rejects.toMatchObject({ code: 'CKPT_BAD_ARGUMENT' })
    } finally {
      await store.close()
    }
  })
})
