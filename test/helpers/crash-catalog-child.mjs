// Child process of the catalog crash test:
//   node crash-catalog-child.mjs <storeDir> <seed> <focus> [maxOps]
// runs a seeded sequence of catalog-changing operations on the store, about half of them of kind
// <focus> (add | add-policy | thin | rm | ref | fork | gc | mix), the rest checkpoints. Before each
// operation it prints {"n","begin":{...}} with everything the test needs to know what the operation
// does, and {"n","ack":{...}} once it resolved (acknowledged: durable). {"ready":true} after the open,
// {"done":true} after maxOps operations and the close. Lines go out with fs.writeSync, so a line is in
// the pipe before the next statement runs. CKPT_TEST_PACK_TARGET (bytes) sets a small pack target.
//
// Timelines: 'rec' (no policy), 'pol' (thins itself by POLICY), forks 'f<n>'.
import fs from 'node:fs'
import { openStore } from '../../dist/src/index.js'
import { makeRng } from './rng.mjs'
import { blobOf, content, dirtyBetween, GEO, POLICY, REF_NAMES, STEP, THIN_POLICIES } from './crash-catalog-workload.mjs'

const say = (o) => fs.writeSync(1, JSON.stringify(o, (_, v) => (typeof v === 'bigint' ? v.toString() : v)) + '\n')
const [dir, seedText, focus, maxOpsText] = process.argv.slice(2)
const seed = Number(seedText)
const maxOps = maxOpsText === undefined ? 1_000_000 : Number(maxOpsText)
const target = process.env.CKPT_TEST_PACK_TARGET
const store = await openStore(dir, { threads: 0, packTargetSize: target ? Number(target) : undefined })
const rng = makeRng(seed)

/** the vtime each timeline handle last built on (its head's): the base of the next dirty hints */
const last = new Map()
const handles = new Map()
for (const t of await store.listTimelines()) {
  const e = await store.seek(t.name, 0xffffffffffffffffn)
  if (e) last.set(t.name, e.vtime)
}

async function handle(name) {
  let h = handles.get(name)
  if (!h) {
    h = await store.timeline(name, last.has(name) ? {} : { regions: GEO, ...(name === 'pol' ? { policy: POLICY } : {}) })
    handles.set(name, h)
  }
  return h
}

async function entries(timelines) {
  const out = []
  for (const t of timelines) if (last.has(t)) for await (const e of store.log(t)) out.push(e)
  return out
}

async function refs() {
  const m = new Map()
  for await (const r of store.refs()) m.set(r.name, r.cid.toString())
  return m
}

const forks = () => [...last.keys()].filter((t) => /^f\d+$/.test(t))

// every handle opened now: a handle opened later would build on the latest checkpoint the catalog
// still has (an rm of the head in between moves it), not on the one `last` names
for (const t of last.keys()) await handle(t)

say({ ready: true })
for (let n = 0; n < maxOps; n++) {
  let op = focus === 'mix' ? rng.pick(['add', 'add-policy', 'thin', 'rm', 'ref', 'fork', 'gc']) : rng.chance(0.5) ? focus : rng.chance(0.5) ? 'add' : 'add-policy'
  const rec = await entries(['rec'])
  if (rec.length < 2 || !last.has('pol')) op = rec.length < 2 ? 'add' : 'add-policy'
  if (op === 'fork' && forks().length >= 16) op = 'add'
  const pinned = new Set((await refs()).values())
  if (op === 'rm' && rec.filter((e) => !pinned.has(e.cid.toString())).length < 2) op = 'add'

  if (op === 'add' || op === 'add-policy') {
    const t = op === 'add-policy' ? 'pol' : rng.pick(['rec', 'rec', ...forks()])
    const h = await handle(t)
    const prev = last.get(t)
    const vtime = prev === undefined ? 0n : prev + STEP
    say({ n, begin: { op: 'add', timeline: t, vtime } })
    const ck = await h.checkpoint({ vtime, regions: { ram: { data: content(vtime), dirty: prev === undefined ? undefined : dirtyBetween(prev, vtime) } }, blobs: { cpu: blobOf(vtime) } })
    last.set(t, vtime)
    say({ n, ack: { cid: ck.cid.toString(), thinned: ck.stats.thinned } })
  } else if (op === 'thin') {
    const policy = rng.pick(THIN_POLICIES)
    say({ n, begin: { op: 'thin', timeline: 'rec', policy } })
    const r = await store.thin('rec', policy)
    say({ n, ack: { dropped: r.dropped.map((e) => e.vtime) } })
  } else if (op === 'rm') {
    const e = rng.pick(rec.filter((x) => !pinned.has(x.cid.toString())))
    say({ n, begin: { op: 'rm', timeline: 'rec', vtime: e.vtime, cid: e.cid.toString() } })
    await store.rm([`rec@${e.vtime}`])
    say({ n, ack: {} })
  } else if (op === 'ref') {
    const r = await refs()
    if (r.size > 0 && rng.chance(0.4)) {
      const name = rng.pick([...r.keys()])
      say({ n, begin: { op: 'ref', name, cid: null } })
      await store.deleteRef(name)
    } else {
      const e = rng.pick(await entries([...last.keys()]))
      const name = rng.pick(REF_NAMES)
      say({ n, begin: { op: 'ref', name, cid: e.cid.toString() } })
      await store.setRef(name, e.cid)
    }
    say({ n, ack: {} })
  } else if (op === 'fork') {
    const e = rng.pick(await entries(['rec', 'pol']))
    const name = `f${n}`
    say({ n, begin: { op: 'fork', timeline: name, from: { timeline: e.timeline, vtime: e.vtime, cid: e.cid.toString() } } })
    const f = await store.fork(name, e.cid)
    last.set(name, e.vtime)
    await handle(name)
    say({ n, ack: { cid: f.cid.toString() } })
  } else if (op === 'gc') {
    const threshold = rng.pick([0.5, 1])
    say({ n, begin: { op: 'gc', threshold } })
    const s = await store.gc({ threshold })
    say({ n, ack: { packsDeleted: s.packsDeleted, packsRewritten: s.packsRewritten } })
  }
}
await store.close()
say({ done: true })
