/**
 * kill -9 during a push (issue 12, item 7; SPEC.md §22.4's write order): a child process
 * (test/helpers/remote-push-child.mjs, the built library) opens a copy of a recorded store and pushes
 * it; the test kills it with SIGKILL at a random moment, drawn so that kills land before the push
 * (store opening), all along it (index, walk, pack upload) and in its last steps (claims, catalog
 * segment), and some after it ended. The remote server is never the process killed: a directory
 * (file://), and s3rver on a worker thread of this process. After each kill:
 *   - the remote as the killed push left it is valid: a fresh full pull works (or, when the kill
 *     came before the remote's format object was written, the URL is not yet a remote) and gives
 *     a gap-free prefix of the store's checkpoints, each restoring byte-identical;
 *   - pushing again from the same store succeeds without a conflict: every claim the killed push
 *     made is its own and is completed (counted as present), the rest are pushed;
 *   - a full pull into a fresh store then gives every checkpoint, each restoring byte-identical.
 * About half the trials push onto a remote that already has the first two checkpoints (an incremental
 * push killed).
 */
import { spawn } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openStore } from '../../src/index.js'
import { openObjectStore } from '../../store/index.js'
import { startS3rver, type TestS3 } from '../helpers/s3-server.js'
import { makeRng } from '../helpers/rng.js'
import { removeTmpDirs, tmpDir } from '../helpers/tmp.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const CHILD = path.join(ROOT, 'test/helpers/remote-push-child.mjs')
const RAM = 4 << 20
const CHECKPOINTS = 4
const TRIALS = 11 // per remote: 2 pushes unkilled, 9 killed

afterAll(removeTmpDirs)

let source: string
const expected: { vtime: bigint; cid: string; ram: Buffer }[] = []

let s3: TestS3 | undefined
beforeAll(async () => {
  if (!fs.existsSync(path.join(ROOT, 'dist/src/index.js'))) throw new Error('dist/ is missing: run `npm run build` before the tests')
  s3 = await startS3rver()
  // 4 MiB of random RAM, then three checkpoints of 128 new random pages each: ~5.5 MiB to push
  source = path.join(tmpDir('ckpt-rcrash-src-'), 'store')
  const store = await openStore(source)
  try {
    const rng = makeRng(1212)
    const ram = Buffer.from(rng.bytes(RAM))
    const tl = await store.timeline('run', { regions: { ram: { size: RAM, chunkSize: 4096 } } })
    for (let k = 0; k < CHECKPOINTS; k++) {
      const dirty: number[] = []
      if (k > 0) {
        for (let j = 0; j < 128; j++) {
          const p = rng.int(0, RAM / 4096)
          ram.set(rng.bytes(4096), p * 4096)
          dirty.push(p)
        }
      }
      const vtime = BigInt(k) * 1000n
      const ck = await tl.checkpoint({ vtime, regions: { ram: k === 0 ? { data: ram } : { data: ram, dirty } } })
      expected.push({ vtime, cid: ck.cid.toString(), ram: Buffer.from(ram) })
    }
    // the source store's own restores are the reference
    const out = Buffer.alloc(RAM)
    for (const e of expected) {
      await store.restore(e.cid, 'ram', out)
      expect(out.equals(e.ram)).toBe(true)
    }
  } finally {
    await store.close()
  }
}, 60_000)
afterAll(async () => {
  await s3?.close()
})

interface Target {
  url(): string
  env: Record<string, string | undefined>
}

type Anchor = 'spawn' | 'ready' | 'packs' | 'catalog'
interface Kill {
  anchor: Anchor
  delay: number
}

interface ChildRun {
  /** the last line the child printed before it died (or DONE) */
  last: string
  killed: boolean
  /** ms from READY to DONE (an unkilled run) */
  pushMs?: number
  readyMs?: number
  /** ms from READY to the first line of each phase (an unkilled run) */
  phases?: Record<string, number>
}

/** Runs the child; kills it (SIGKILL) `kill.delay` ms after its anchor line, unless it ended first. */
function runChild(dir: string, url: string, env: Record<string, string | undefined>, kill?: Kill): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    const child = spawn(process.execPath, [CHILD, dir, url], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
    let last = ''
    let stderr = ''
    let readyAt: number | undefined
    let doneAt: number | undefined
    let timer: NodeJS.Timeout | undefined
    const phases: Record<string, number> = {}
    const arm = () => {
      timer = setTimeout(() => child.kill('SIGKILL'), kill!.delay)
    }
    if (kill?.anchor === 'spawn') arm()
    let buf = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      buf += d
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        last = line.startsWith('DONE') ? 'DONE' : line
        if (line === 'READY') {
          readyAt = performance.now()
          if (kill?.anchor === 'ready') arm()
        }
        const phase = /^PHASE (\w+)/.exec(line)?.[1]
        if (phase && !(phase in phases)) {
          phases[phase] = performance.now() - readyAt!
          if (kill?.anchor === phase) arm()
        }
        if (line.startsWith('DONE')) doneAt = performance.now()
      }
    })
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    child.on('error', reject)
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      if (signal === 'SIGKILL') return resolve({ last, killed: true })
      if (code !== 0) return reject(new Error(`the push child exited ${code}: ${stderr}`))
      resolve({ last, killed: false, readyMs: readyAt! - t0, pushMs: doneAt! - readyAt!, phases })
    })
  })
}

const want = () => expected.map((e) => `run@${e.vtime}=${e.cid}`)

/** A full pull of `url` into a fresh store; every checkpoint it gives restores byte-identical. Returns its log. */
async function pullAndCheck(url: string, env: Target['env']): Promise<string[]> {
  const dir = path.join(tmpDir('ckpt-rcrash-pull-'), 'store')
  const store = await openStore(dir, { threads: 0 })
  try {
    await store.pull(url, undefined, { env })
    const log: string[] = []
    for await (const e of store.log()) log.push(`${e.timeline}@${e.vtime}=${e.cid}`)
    const out = Buffer.alloc(RAM)
    for (const line of log) {
      const e = expected.find((x) => line === `run@${x.vtime}=${x.cid}`)
      expect(e, `${line} is one of the source store's checkpoints`).toBeDefined()
      out.fill(0xee)
      await store.restore(e!.cid, 'ram', out)
      expect(out.equals(e!.ram), `${line} restores byte-identical`).toBe(true)
    }
    return log
  } finally {
    await store.close()
    fs.rmSync(path.dirname(dir), { recursive: true, force: true })
  }
}

async function claimsOn(url: string, env: Target['env']): Promise<number> {
  const objects = await openObjectStore(url, { env })
  try {
    let n = 0
    for await (const _ of objects.list('cp/run/')) n++
    return n
  } finally {
    await objects.close()
  }
}

function crashSuite(name: string, target: () => Target, seed: number): void {
  it(`${name}: kill -9 at random moments of a push (${TRIALS} trials); the remote stays valid, a second push completes it, a pull elsewhere restores every checkpoint`, async () => {
    const t = target()
    const rng = makeRng(seed)
    const seen: string[] = []

    /** One trial: a copy of the source store, a fresh remote (with the first two checkpoints when prePushed), a push killed (or not). */
    const trial = async (kill: Kill | undefined, prePushed: 0 | 2): Promise<ChildRun> => {
      const dir = path.join(tmpDir('ckpt-rcrash-'), 'store')
      fs.cpSync(source, dir, { recursive: true })
      const url = t.url()
      if (prePushed) {
        const s = await openStore(dir, { threads: 0 })
        try {
          expect((await s.push(url, [`run@${expected[1]!.vtime}`], { env: t.env })).timelines).toEqual([{ name: 'run', pushed: 2, present: 0 }])
        } finally {
          await s.close()
        }
      }
      const run = await runChild(dir, url, t.env, kill)
      const what = `trial ${seen.length} (${kill ? `${kill.anchor} +${kill.delay} ms` : 'not killed'}, ${prePushed} pre-pushed): ${run.killed ? `killed after "${run.last || 'nothing'}"` : 'the push ended'}`
      seen.push(what)

      // the remote as the killed push left it
      let after: string[]
      const e = await pullAndCheck(url, t.env).catch((err: unknown) => err as { code?: string; message: string })
      if (Array.isArray(e)) after = e
      else {
        // only a remote that never got its format object is not a remote yet
        expect(prePushed, `${what}: ${e.message}`).toBe(0)
        expect(e.code, `${what}: ${e.message}`).toBe('CKPT_BAD_REMOTE')
        expect(e.message).toMatch(/is not a ckpt remote/)
        after = []
      }
      expect(want().slice(0, after.length), `${what}: a gap-free prefix of the store's checkpoints`).toEqual(after)
      expect(after.length, what).toBeGreaterThanOrEqual(prePushed)
      if (!run.killed) expect(after, what).toEqual(want())
      const claims = await claimsOn(url, t.env)
      expect(claims, `${what}: claims made >= checkpoints listed`).toBeGreaterThanOrEqual(after.length)

      // the same store pushes again: its own claims are completed, no conflict
      const s = await openStore(dir, { threads: 0 })
      try {
        const again = await s.push(url, undefined, { env: t.env })
        expect(again.conflicts, what).toEqual([])
        expect(again.timelines, what).toEqual([{ name: 'run', pushed: CHECKPOINTS - claims, present: claims }])
      } finally {
        await s.close()
      }
      expect(await pullAndCheck(url, t.env), what).toEqual(want())
      fs.rmSync(path.dirname(dir), { recursive: true, force: true })
      return run
    }

    // unkilled pushes (a whole one, and one onto a remote with two checkpoints): how long the child
    // takes to open the store and to push, which the kills below are spread over
    const full = await trial(undefined, 0)
    const part = await trial(undefined, 2)
    const kills: { kill: Kill; prePushed: 0 | 2 }[] = [{ kill: { anchor: 'spawn', delay: rng.int(0, Math.round(full.readyMs!)) }, prePushed: 0 }]
    // before the upload (opening the remote, its index, the walk), all along the upload, in the last
    // steps (claims, then the catalog segment: short, so aimed at); every other one onto two checkpoints
    const upload = (r: ChildRun) => r.phases!.catalog! - r.phases!.packs!
    for (let k = 0; k < 2; k++) kills.push({ kill: { anchor: 'ready', delay: Math.round(rng.float() * full.phases!.packs!) }, prePushed: k === 1 ? 2 : 0 })
    for (let k = 0; k < 4; k++) {
      const prePushed = k % 2 === 1 ? 2 : 0
      kills.push({ kill: { anchor: 'packs', delay: Math.round(((k >> 1) + rng.float()) / 2 * 0.9 * upload(prePushed ? part : full)) }, prePushed })
    }
    for (let k = 0; k < 2; k++) kills.push({ kill: { anchor: 'catalog', delay: rng.int(0, 8) }, prePushed: k === 1 ? 2 : 0 })
    for (const { kill, prePushed } of kills) await trial(kill, prePushed)

    console.log(`${name}: a push takes ${Math.round(full.pushMs!)} ms, its upload ${Math.round(upload(full))} ms (onto two checkpoints: ${Math.round(part.pushMs!)}, ${Math.round(upload(part))} ms), after the store opened (${Math.round(full.readyMs!)} ms)\n  ${seen.join('\n  ')}`)
    expect(seen).toHaveLength(TRIALS)
    // the kills hit the push itself, not only its edges
    expect(seen.filter((s) => /killed after "PHASE (packs|catalog)/.test(s)).length, seen.join('\n')).toBeGreaterThanOrEqual(3)
  }, 120_000)
}

describe('kill -9 during a push', () => {
  let n = 0
  crashSuite('file://', () => ({ url: () => pathToFileURL(tmpDir('ckpt-rcrash-remote-')).href + `/r${n++}`, env: {} }), 77)
  crashSuite('s3rver', () => ({ url: () => s3!.url(`crash-${crypto.randomBytes(4).toString('hex')}`), env: s3!.env }), 78)
})
