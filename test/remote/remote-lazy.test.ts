/**
 * Lazy reads (issue 12, items 4 and 7; SPEC.md §22.6), counted at the server: s3rver behind a tiny
 * HTTP proxy that counts the GETs of pack objects (both run on worker threads of this process: a lazy
 * read blocks the main thread in Atomics.wait while a worker thread of its own asks the server). The
 * remote's URL and AWS_* point at the proxy, in this process's environment too, as a user's would
 * (a store reopened later takes them from there).
 *   - readChunk of 16 neighbouring 4 KiB pages (a window of a leaf) of incompressible RAM, one at a
 *     time: one GET (the ~66 KiB they take in the pack span two or three 64 KiB extents; a read
 *     fetches two extents ahead); a second pass 0; after reopening the store 0 (the cache persists),
 *     and a fresh window again one;
 *   - a lazy restore of a whole region is byte-identical, in at most one GET per 16 chunks;
 *   - with the remote gone (its objects deleted) a block never read is CKPT_REMOTE_UNAVAILABLE naming
 *     it, never wrong bytes, while blocks read before still read (also after reopening).
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { Worker } from 'node:worker_threads'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { blake3 } from '../../codecs/blake3.js'
import { cidBytes, cidToString, RAW } from '../../codecs/cid.js'
import { openStore, type CkptStore } from '../../src/index.js'
import { openObjectStore } from '../../store/index.js'
import { makeRng } from '../helpers/rng.js'
import { startS3rver, type TestS3 } from '../helpers/s3-server.js'
import { caught, removeTmpDirs, tmpStorePath } from '../helpers/tmp.js'

const PAGE = 4096
const RAM = 4 << 20
/** pages per leaf node (the default fan-out) */
const LEAF = 256

// counts: [0] every request, [1] GETs of packs/, [2] of those, ranged ones
const PROXY = `
const { parentPort, workerData } = require('node:worker_threads')
const http = require('node:http')
const counts = new Int32Array(workerData.counts)
const agent = new http.Agent({ keepAlive: true })
const server = http.createServer((req, res) => {
  Atomics.add(counts, 0, 1)
  if (req.method === 'GET' && /\\/packs\\//.test(req.url)) {
    Atomics.add(counts, 1, 1)
    if (req.headers.range) Atomics.add(counts, 2, 1)
  }
  const up = http.request({ host: '127.0.0.1', port: workerData.port, method: req.method, path: req.url, headers: req.headers, agent }, (r) => {
    res.writeHead(r.statusCode, r.headers)
    r.pipe(res)
  })
  up.on('error', (err) => res.destroy(err))
  req.pipe(up)
})
server.listen(0, '127.0.0.1', () => parentPort.postMessage({ port: server.address().port }))
parentPort.on('message', (m) => { if (m === 'close') server.close(() => parentPort.postMessage({ closed: true })) })
`

interface Proxy {
  port: number
  counts: Int32Array
  worker: Worker
}

async function startProxy(upstream: number): Promise<Proxy> {
  const counts = new Int32Array(new SharedArrayBuffer(3 * 4))
  const worker = new Worker(PROXY, { eval: true, workerData: { port: upstream, counts: counts.buffer } })
  worker.unref()
  const port = await new Promise<number>((resolve, reject) => {
    worker.once('message', (m: { port: number }) => resolve(m.port))
    worker.once('error', reject)
  })
  return { port, counts, worker }
}

let s3: TestS3 | undefined
let proxy: Proxy | undefined
let env: Record<string, string>
let cid: string
let ram: Buffer
const saved: Record<string, string | undefined> = {}

/** GETs of pack objects so far */
const gets = () => Atomics.load(proxy!.counts, 1)
/** Waits until no request reached the proxy for 250 ms (a read's background prefetch has ended). */
async function quiet(): Promise<void> {
  let was = -1
  for (let now = Atomics.load(proxy!.counts, 0); now !== was; now = Atomics.load(proxy!.counts, 0)) {
    was = now
    await sleep(250)
  }
}

const page = (i: number) => ram.subarray(i * PAGE, (i + 1) * PAGE)
const pageCid = (i: number) => cidToString(cidBytes(RAW, blake3(page(i))))

/** A remote holding the recorded checkpoint (pushed through the proxy). */
async function remoteWithCheckpoint(src: string): Promise<string> {
  const url = s3!.url()
  const a = await openStore(src, { threads: 0 })
  try {
    expect((await a.push(url, undefined, { env })).timelines).toEqual([{ name: 'vm', pushed: 1, present: 0 }])
  } finally {
    await a.close()
  }
  return url
}

/** Reads pages [from, from+n) one at a time, checking their bytes; the pack GETs they made (background prefetches included). */
async function readPages(store: CkptStore, from: number, n: number): Promise<number> {
  await quiet()
  const before = gets()
  for (let i = from; i < from + n; i++) {
    const got = Buffer.from(await store.readChunk(cid, 'ram', i))
    expect(got.equals(page(i)), `page ${i}`).toBe(true)
  }
  await quiet()
  return gets() - before
}

let src: string

beforeAll(async () => {
  s3 = await startS3rver()
  proxy = await startProxy(Number(new URL(s3.env.AWS_ENDPOINT_URL_S3).port))
  env = { ...s3.env, AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${proxy.port}` }
  for (const k of Object.keys(env)) saved[k] = process.env[k]
  Object.assign(process.env, env)
  // 4 MiB of incompressible RAM in 4 KiB pages: 1,024 chunks under 4 leaves
  ram = Buffer.from(makeRng(1616).bytes(RAM))
  src = tmpStorePath('ckpt-lazy-src-')
  const a = await openStore(src, { threads: 0 })
  try {
    const tl = await a.timeline('vm', { regions: { ram: { size: RAM, chunkSize: PAGE } } })
    cid = (await tl.checkpoint({ vtime: 0, regions: { ram: { data: ram } } })).cid.toString()
  } finally {
    await a.close()
  }
}, 60_000)

afterAll(async () => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k]
    else process.env[k] = v
  }
  if (proxy) {
    const w = proxy.worker
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 3000)
      w.once('message', () => (clearTimeout(t), resolve()))
      w.postMessage('close')
    })
    await w.terminate()
  }
  await s3?.close()
  removeTmpDirs()
})

describe('lazy reads, counted at the server (s3rver behind a counting proxy)', () => {
  it('a lazy readChunk makes at most one GET per 16 neighbouring chunks; a second pass none, after reopening none; a fresh window after reopening at most one again', async () => {
    const url = await remoteWithCheckpoint(src)
    const dir = tmpStorePath('ckpt-lazy-')
    let c = await openStore(dir, { threads: 0 })
    try {
      const p = await c.pull(url, undefined, { lazy: true, env })
      expect(p).toMatchObject({ lazy: true, blocks: 0 })
      // the tree's path (root, each leaf) and the first window of each leaf come in first
      for (let leaf = 0; leaf < RAM / PAGE / LEAF; leaf++) await readPages(c, leaf * LEAF, 1)
      const counts: Record<string, number> = {}
      // windows of 16 pages (readChunk's unit), two windows apart: no extent shared
      for (const w of [4, 8, 12, LEAF / 16 + 4]) {
        const first = await readPages(c, w * 16, 16)
        counts[`window ${w}`] = first
        expect(first, `pages ${w * 16}..${w * 16 + 15}: GETs`).toBeGreaterThanOrEqual(1)
        expect(first, `pages ${w * 16}..${w * 16 + 15}: GETs`).toBeLessThanOrEqual(1)
        expect(await readPages(c, w * 16, 16), `pages ${w * 16}..${w * 16 + 15} again`).toBe(0)
      }
      await c.close()
      c = await openStore(dir, { threads: 0 })
      for (const w of [4, 8, 12, LEAF / 16 + 4]) expect(await readPages(c, w * 16, 16), `window ${w} after reopening`).toBe(0)
      for (const w of [LEAF / 16 + 8, 2 * (LEAF / 16) + 4]) {
        const first = await readPages(c, w * 16, 16)
        counts[`window ${w} (reopened)`] = first
        expect(first, `pages ${w * 16}..${w * 16 + 15} after reopening: GETs`).toBeLessThanOrEqual(1)
        expect(await readPages(c, w * 16, 16)).toBe(0)
      }
      console.log('pack GETs per window of 16 pages:', counts)
    } finally {
      await c.close()
    }
  }, 60_000)

  it('a lazy restore of a whole region is byte-identical, in at most one GET per 16 chunks; a second restore reads nothing from the remote', async () => {
    const url = await remoteWithCheckpoint(src)
    const c = await openStore(tmpStorePath('ckpt-lazy-'), { threads: 0 })
    try {
      await c.pull(url, undefined, { lazy: true, env })
      await quiet()
      const before = gets()
      const out = Buffer.alloc(RAM, 0xee)
      await c.restore(cid, 'ram', out)
      expect(out.equals(ram)).toBe(true)
      await quiet()
      const n = gets() - before
      expect(n).toBeGreaterThan(0)
      expect(n).toBeLessThanOrEqual(RAM / PAGE / 16)
      out.fill(0xee)
      await c.restore(cid, 'ram', out)
      expect(out.equals(ram)).toBe(true)
      await quiet()
      expect(gets() - before).toBe(n)
    } finally {
      await c.close()
    }
  }, 60_000)

  /** A lazy store that read pages 64..79 of the checkpoint, then lost its remote (every object under its prefix deleted). */
  async function orphaned(): Promise<{ dir: string; store: CkptStore }> {
    const url = await remoteWithCheckpoint(src)
    const dir = tmpStorePath('ckpt-lazy-')
    const store = await openStore(dir, { threads: 0 })
    await store.pull(url, undefined, { lazy: true, env })
    await readPages(store, 64, 16)
    const objects = await openObjectStore(url, { env })
    try {
      const keys: string[] = []
      for await (const o of objects.list('')) keys.push(o.key)
      expect(keys.length).toBeGreaterThan(0)
      for (const k of keys) await objects.delete(k)
    } finally {
      await objects.close()
    }
    return { dir, store }
  }
  /** a page no read touched (nor any prefetch: two windows away from those read) */
  const NEVER = 8 * 16 + 3

  it('with the remote gone, a block never read is CKPT_REMOTE_UNAVAILABLE, never wrong bytes; blocks read before still read, also after reopening', async () => {
    let { dir, store: c } = await orphaned()
    try {
      const e = await caught(() => c.readChunk(cid, 'ram', NEVER))
      expect(e.code).toBe('CKPT_REMOTE_UNAVAILABLE')
      await readPages(c, 64, 16)
      const r = await caught(() => c.restore(cid, 'ram', Buffer.alloc(RAM)))
      expect(r.code).toBe('CKPT_REMOTE_UNAVAILABLE')
      await c.close()
      c = await openStore(dir, { threads: 0 })
      await readPages(c, 64, 16)
      expect((await caught(() => c.readChunk(cid, 'ram', NEVER))).code).toBe('CKPT_REMOTE_UNAVAILABLE')
      // still: after the failures, what was read reads
      await readPages(c, 64, 16)
    } finally {
      await c.close()
    }
  }, 60_000)

  // BUG: RemoteBlocks.fill (store/remote/remote-blocks.ts) throws CKPT_REMOTE_UNAVAILABLE with the pack
  // key and byte range only ({remote, key, offset}); BlockStore.readRemote (store/block-store.ts) lets
  // it through without the CID it was reading, so the error does not name the block (issue 12, item 4)
  it('with the remote gone, the CKPT_REMOTE_UNAVAILABLE of a block never read names it (its CID in the message or details)', async () => {
    const { store: c } = await orphaned()
    try {
      const e = await caught(() => c.readChunk(cid, 'ram', NEVER))
      expect(e.code).toBe('CKPT_REMOTE_UNAVAILABLE')
      expect(`${e.message} ${JSON.stringify(e.details ?? {})}`, 'the error names the block').toContain(pageCid(NEVER))
    } finally {
      await c.close()
    }
  }, 60_000)
})
