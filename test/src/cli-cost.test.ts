/**
 * What a single small `ckpt` process no longer pays for, and that it changes nothing else:
 * - the worker pool starts its threads only once INLINE_BYTES of work has been done on the calling
 *   thread (or at once with CKPT_INLINE_BYTES=0): the main-thread path and the worker path, and a
 *   checkpoint that switches from one to the other midway, give the same roots and restore the same bytes;
 * - the CLI loads a command's module only when it runs (src/cli/registry.ts): the lazy table lists the
 *   commands of the help table in its order, and errors keep their codes and exit statuses.
 * Needs the build (the worker script and the CLI are run from dist/).
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { openStore, type CkptStore } from '../../src/index.js'
import { COMMANDS } from '../../src/cli/commands.js'
import { COMMAND_NAMES, loadCommand } from '../../src/cli/registry.js'
import { INLINE_BYTES, prestartWorkers, taskBytes, WorkerPool } from '../../src/pipeline/worker-pool.js'
import type { HashTask } from '../../src/pipeline/tasks.js'
import { pattern } from '../helpers/bytes.js'
import { blake3 } from '../../codecs/blake3.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const CLI = path.join(ROOT, 'dist/cli/ckpt.js')

const dirs: string[] = []
const stores: CkptStore[] = []
const pools: WorkerPool[] = []
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-cost-'))
  dirs.push(d)
  return d
}
const savedEnv = process.env.CKPT_INLINE_BYTES
afterEach(async () => {
  if (savedEnv === undefined) delete process.env.CKPT_INLINE_BYTES
  else process.env.CKPT_INLINE_BYTES = savedEnv
  for (const s of stores.splice(0)) await s.close()
  for (const p of pools.splice(0)) await p.close()
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true })
})

function hashTask(data: Uint8Array, chunk: number): HashTask {
  const n = Math.ceil(data.length / chunk)
  const offsets = new Uint32Array(n)
  const lengths = new Uint32Array(n)
  for (let k = 0; k < n; k++) {
    offsets[k] = k * chunk
    lengths[k] = Math.min(chunk, data.length - k * chunk)
  }
  const shared = new Uint8Array(new SharedArrayBuffer(data.length))
  shared.set(data)
  return { op: 'hash', data: shared, offsets, lengths }
}

describe('worker pool: lazy start', () => {
  it('runs small work on the calling thread and starts its workers once the inline budget is spent', async () => {
    expect(fs.existsSync(path.join(ROOT, 'dist/src/pipeline/worker.js')), 'npm run build first').toBe(true)
    const data = pattern(1 << 20, 1)
    const pool = new WorkerPool(2, 3 << 20)
    pools.push(pool)
    expect(pool.threads).toBe(2)
    const inline = await pool.run(hashTask(data, 4096))
    expect(pool.started).toBe(false)
    expect(taskBytes(hashTask(data, 4096))).toBe(data.length)
    // three more MiB spend the budget: the workers start, tasks keep running inline until they are ready
    for (let i = 0; i < 3; i++) await pool.run(hashTask(data, 4096))
    for (let i = 0; i < 200 && !pool.started; i++) {
      await pool.run(hashTask(data.subarray(0, 4096), 4096))
      await new Promise((r) => setTimeout(r, 10))
    }
    expect(pool.started).toBe(true)
    const onWorker = await pool.run(hashTask(data, 4096))
    expect(Buffer.from(onWorker.digests).equals(Buffer.from(inline.digests))).toBe(true)
    expect(Buffer.from(onWorker.zero).equals(Buffer.from(inline.zero))).toBe(true)
  })

  it('a store opened with startWorkers starts its workers at open, before any task (ckpt serve); without it, not', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-start-'))
    const poolOf = (s: CkptStore) => (s as unknown as { pool: WorkerPool }).pool
    // the lazy start under test (CI's second run sets CKPT_INLINE_BYTES=0: workers at once everywhere)
    const inline = process.env.CKPT_INLINE_BYTES
    delete process.env.CKPT_INLINE_BYTES
    try {
      const lazy = await openStore(path.join(dir, 'a'), { threads: 2 })
      await new Promise((r) => setTimeout(r, 300))
      expect(poolOf(lazy).started).toBe(false)
      await lazy.close()
      const eager = await openStore(path.join(dir, 'b'), { threads: 2, startWorkers: true })
      for (let i = 0; i < 300 && !poolOf(eager).started; i++) await new Promise((r) => setTimeout(r, 10))
      expect(poolOf(eager).started).toBe(true)
      await eager.close()
    } finally {
      if (inline !== undefined) process.env.CKPT_INLINE_BYTES = inline
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it('starts at once with CKPT_INLINE_BYTES=0; never without threads', async () => {
    process.env.CKPT_INLINE_BYTES = '0'
    const eager = new WorkerPool(2)
    pools.push(eager)
    await eager.run(hashTask(pattern(4096, 2), 4096))
    expect(eager.started).toBe(true)
    const none = new WorkerPool(0)
    pools.push(none)
    expect(none.threads).toBe(0)
    await none.run(hashTask(pattern(1 << 20, 2), 4096))
    expect(none.started).toBe(false)
    expect(INLINE_BYTES).toBeGreaterThan(1 << 20)
  })

  it('adopts workers started ahead (prestartWorkers): they serve the first tasks once ready', async () => {
    delete process.env.CKPT_INLINE_BYTES
    prestartWorkers(2)
    const pool = new WorkerPool(2)
    pools.push(pool)
    const data = pattern(256 << 10, 7)
    const inline = await pool.run(hashTask(data, 4096)) // inline or not: same digests
    for (let i = 0; i < 200 && !pool.started; i++) await new Promise((r) => setTimeout(r, 10))
    expect(pool.started).toBe(true)
    const onWorker = await pool.run(hashTask(data, 4096))
    expect(Buffer.from(onWorker.digests).equals(Buffer.from(inline.digests))).toBe(true)
    // taken: the next pool starts its own, lazily
    const next = new WorkerPool(2)
    pools.push(next)
    await next.run(hashTask(data, 4096))
    expect(next.started).toBe(false)
  })

  it('gives the same roots and restores the same bytes inline, on workers from the start, and switching midway', async () => {
    const ram = pattern(6 << 20, 3)
    const file = path.join(tmp(), 'disk.img')
    fs.writeFileSync(file, pattern(40 * 65536 + 1000, 4)) // a short last cluster
    const results: string[][] = []
    // budget: inline throughout, workers from the first task, workers starting during the first checkpoint
    for (const budget of [String(1 << 30), '0', String(2 << 20)]) {
      process.env.CKPT_INLINE_BYTES = budget
      const store = await openStore(tmp(), { threads: 2 })
      stores.push(store)
      const tl = await store.timeline('t', { regions: { ram: { size: ram.length }, disk: { size: fs.statSync(file).size, chunkSize: 65536 } } })
      const a = await tl.checkpoint({ vtime: 0, regions: { ram: { data: ram }, disk: { data: file } } })
      const r2 = Buffer.from(ram)
      r2.fill(1, 0, 4096)
      r2.fill(2, 5 << 20, (5 << 20) + 8192)
      const b = await tl.checkpoint({ vtime: 1, regions: { ram: { data: r2, dirty: [0, 1280, 1281] } } })
      const roots = async (ref: typeof a.cid) => {
        const m = await store.manifest(ref)
        return [m.regions.ram!.root, m.regions.disk!.root].map((r) => (r ? r.toString() : 'zero'))
      }
      results.push([...(await roots(a.cid)), ...(await roots(b.cid))])
      const out = Buffer.alloc(ram.length)
      await store.restore(b.cid, 'ram', out)
      expect(out.equals(r2)).toBe(true)
      const outFile = path.join(tmp(), 'restored.img')
      await store.restore(a.cid, 'disk', outFile)
      expect(fs.readFileSync(outFile).equals(fs.readFileSync(file))).toBe(true)
    }
    expect(results[1]).toEqual(results[0])
    expect(results[2]).toEqual(results[0])
  })
})

describe('CLI: one command module per process', () => {
  it('the lazy table names the commands of the help table, in its order, each loading that command', async () => {
    expect(COMMAND_NAMES).toEqual([...COMMANDS.keys()])
    for (const name of COMMAND_NAMES) {
      const c = await loadCommand(name)
      expect(c?.help, name).toBe(COMMANDS.get(name)!.help)
      expect(c?.json, name).toBe(COMMANDS.get(name)!.json)
    }
    expect(await loadCommand('nope')).toBeUndefined()
  })

  function ckpt(...args: string[]) {
    return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' })
  }

  it('errors keep their codes and exit statuses', () => {
    expect(fs.existsSync(CLI), 'npm run build first').toBe(true)
    const store = path.join(tmp(), 's')
    expect(ckpt('init', '--store', store).status).toBe(0)
    let r = ckpt('add', '--store', store, '--timeline', 't', '--vtime', '0', 'ram=/nonexistent/ram.bin', '--json')
    expect(r.status).toBe(1)
    expect(JSON.parse(r.stdout).error.code).toBe('CKPT_NOT_FOUND')
    r = ckpt('frobnicate')
    expect(r.status).toBe(2)
    expect(r.stderr).toMatch(/unknown command "frobnicate"/)
    r = ckpt('help', 'frobnicate')
    expect(r.status).toBe(2)
    r = ckpt('log', '--store', path.join(tmp(), 'missing'), '--json')
    expect(r.status).toBe(3)
    expect(JSON.parse(r.stdout).error.code).toMatch(/^CKPT_/)
    r = ckpt('add', '--store', store, '--bogus')
    expect(r.status).toBe(2)
    r = ckpt('restore', '--help')
    expect(r.status).toBe(0)
    expect(r.stdout).toMatch(/^usage: ckpt restore /)
    r = ckpt('help', 'add')
    expect(r.status).toBe(0)
    expect(r.stdout).toBe(COMMANDS.get('add')!.help + '\n')
  })

  it('a small add and a restore of it work end to end (inline hashing in the CLI)', () => {
    const d = tmp()
    const store = path.join(d, 's')
    const img = path.join(d, 'ram.bin')
    const bytes = pattern(1 << 20, 9)
    fs.writeFileSync(img, bytes)
    expect(ckpt('add', '--store', store, '--timeline', 't', '--vtime', '0', `ram=${img}`).status).toBe(0)
    bytes.fill(5, 0, 4096)
    fs.writeFileSync(img, bytes)
    expect(ckpt('add', '--store', store, '--timeline', 't', '--vtime', '1', `ram=${img}`).status).toBe(0)
    const outDir = path.join(d, 'out')
    const r = ckpt('restore', '--store', store, 't@1', '--all', '--out', outDir)
    expect(r.status, r.stderr).toBe(0)
    expect(fs.readFileSync(path.join(outDir, 'ram')).equals(bytes)).toBe(true)
  })
})

describe('the ckpt command is a bundle (scripts/bundle-cli.mjs)', () => {
  it('dist/cli/ckpt.js bundles the CLI, and the worker script beside it answers the pool', async () => {
    const text = fs.readFileSync(CLI, 'utf8')
    // a build without esbuild writes a shim that imports the unbundled CLI; this checkout has esbuild
    expect(text).not.toContain("import '../src/cli.js'")
    expect(text.startsWith('#!/usr/bin/env node')).toBe(true)
    const { Worker } = await import('node:worker_threads')
    const w = new Worker(path.join(ROOT, 'dist/cli/worker.js'))
    try {
      const data = pattern(6 * 4096, 3)
      const got = await new Promise<{ digests: Uint8Array; zero: Uint8Array }>((resolve, reject) => {
        w.on('error', reject)
        w.on('message', (m: { id?: number; result?: { digests: Uint8Array; zero: Uint8Array }; error?: { message: string } }) => {
          if (m.id !== 1) return
          if (m.error) reject(new Error(m.error.message))
          else resolve(m.result!)
        })
        w.postMessage({ id: 1, task: hashTask(data, 4096) })
      })
      let hashed = 0
      for (let k = 0; k < 6; k++) {
        const chunk = data.subarray(k * 4096, (k + 1) * 4096)
        if (got.zero[k]) expect(chunk.every((x) => x === 0), `chunk ${k}`).toBe(true)
        else {
          hashed++
          expect(Buffer.from(got.digests.subarray(k * 32, k * 32 + 32)).equals(Buffer.from(blake3(chunk))), `chunk ${k}`).toBe(true)
        }
      }
      expect(hashed).toBeGreaterThan(0)
    } finally {
      await w.terminate()
    }
    expect(fs.existsSync(path.join(ROOT, 'dist/cli/sync-reader-worker.js'))).toBe(true)
  })
})
