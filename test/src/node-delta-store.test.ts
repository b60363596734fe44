/**
 * Tree nodes as the store writes them (SPEC.md, "Node deltas"): form-2 deltas where a checkpoint
 * writes one content in many places, and a chain that reaches its depth limit continued as a delta of
 * the node it started from instead of a whole node. Every version reads back, verify is clean, and
 * so is a store reopened and gc'd after thinning.
 */
import { afterAll, expect, it } from 'vitest'
import { AT_REST } from '../../codecs/compress.js'
import { ENTRY_KIND, scanPackFile } from '../../store/index.js'
import { openStore, verifyStore, type CkptStore } from '../../src/index.js'
import { removeTmpDirs, tmpStorePath } from '../helpers/tmp.js'
import fs from 'node:fs'
import path from 'node:path'

afterAll(removeTmpDirs)

const CHUNK = 512
const CHUNKS = 64 // one leaf: the root is the region's only node

/** The content of checkpoint k: chunk 7 changes every time; chunks 30..37 all get one content (k % 3); chunk 40 + k % 20 gets k. */
function image(k: number): Uint8Array {
  const data = new Uint8Array(CHUNK * CHUNKS).fill(1)
  data.fill(100 + (k % 150), 7 * CHUNK, 8 * CHUNK)
  for (let c = 30; c < 38; c++) data.fill(200 + (k % 3), c * CHUNK, (c + 1) * CHUNK)
  data.fill(k % 250, (40 + (k % 20)) * CHUNK, (41 + (k % 20)) * CHUNK)
  return data
}

async function clean(store: CkptStore): Promise<boolean> {
  const it = verifyStore(store, { deep: true })
  let r = await it.next()
  while (!r.done) r = await it.next()
  return r.value.clean
}

function nodeEntries(dir: string): { codec: number; depth: number; form2: boolean; rawLength: number }[] {
  const out: { codec: number; depth: number; form2: boolean; rawLength: number }[] = []
  for (const f of fs.readdirSync(path.join(dir, 'packs')).filter((x) => x.endsWith('.pack'))) {
    for (const ev of scanPackFile(path.join(dir, 'packs', f), Number.parseInt(f, 10))) {
      if (ev.kind !== 'entry' || ev.entry.kind !== ENTRY_KIND.block || ev.entry.cid[1] !== 0x71) continue
      const e = ev.entry
      out.push({ codec: e.codec, depth: e.depth, form2: e.codec === AT_REST.nodeDelta && e.payload[36] === 0, rawLength: e.rawLength })
    }
  }
  return out
}

it('a long history of one node: form-2 deltas, chains kept short without whole rewrites, every version exact', async () => {
  const dir = tmpStorePath('ckpt-delta2-')
  let store = await openStore(dir, { threads: 1 })
  const tl = await store.timeline('t', { regions: { r: { size: CHUNK * CHUNKS, chunkSize: CHUNK } } })
  const K = 90 // well past the depth limit (25..32) twice
  const cps: string[] = []
  for (let k = 0; k < K; k++) cps.push((await tl.checkpoint({ vtime: k, regions: { r: { data: image(k) } } })).cid.toString())
  await store.close()

  const nodes = nodeEntries(dir)
  expect(nodes.length).toBe(K) // one node per checkpoint (the root), each new
  const whole = nodes.filter((n) => n.codec !== AT_REST.nodeDelta)
  expect(whole.length).toBe(1) // the first: past the limit, a chain goes on from it
  expect(Math.max(...nodes.map((n) => n.depth))).toBeLessThanOrEqual(32)
  expect(nodes.some((n) => n.form2)).toBe(true)

  store = await openStore(dir, { threads: 1 })
  try {
    await expectRestores(store, cps, 0, K)
    expect(await clean(store)).toBe(true)
  } finally {
    await store.close()
  }
})

it('the chain starts stay stored through thinning and gc', async () => {
  const dir = tmpStorePath('ckpt-delta2-gc-')
  let store = await openStore(dir, { threads: 1 })
  const tl = await store.timeline('t', { regions: { r: { size: CHUNK * CHUNKS, chunkSize: CHUNK } } })
  const cps: string[] = []
  for (let k = 0; k < 70; k++) cps.push((await tl.checkpoint({ vtime: k, regions: { r: { data: image(k) } } })).cid.toString())
  // keep only the last few: the whole node the chains start from belongs to checkpoint 0
  await store.rm(cps.slice(0, 65))
  await store.gc()
  await store.close()
  store = await openStore(dir, { threads: 1 })
  try {
    await expectRestores(store, cps, 65, 70)
    expect(await clean(store)).toBe(true)
  } finally {
    await store.close()
  }
})

/** Checkpoints [from, to) of `cps` restore to the images they were made of. */
async function expectRestores(store: CkptStore, cps: string[], from: number, to: number): Promise<void> {
  for (let k = from; k < to; k++) {
    const back = new Uint8Array(CHUNK * CHUNKS)
    await store.restore(cps[k]!, 'r', back)
    expect(Buffer.from(back).equals(Buffer.from(image(k))), `checkpoint ${k}`).toBe(true)
  }
}
