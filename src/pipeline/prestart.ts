/**
 * Worker threads started ahead of the pool that will use them, and the work they can do before it
 * exists: the CLI starts them (and has them hash its input files' spans) before it loads the library
 * and opens the store, so a Node isolate's start (~50-100 ms of CPU each) and the reading overlap that.
 * Kept apart from worker-pool.ts so that `ckpt add` can load it first thing, without the task code.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { SPAN_SIZE } from '../../codecs/span.js'
import type { HashResult, HashTask } from './tasks.js'

/**
 * The compiled worker script: worker.js beside this module (dist/src/pipeline/, or, in the CLI's bundle,
 * dist/cli/ beside the chunk this code is in); from the TypeScript sources, the build's.
 */
export function workerScript(): string | undefined {
  const here = fileURLToPath(import.meta.url)
  const candidates = here.endsWith('.ts')
    ? [fileURLToPath(new URL('../../dist/src/pipeline/worker.js', import.meta.url))]
    : [path.join(path.dirname(here), 'worker.js')]
  return candidates.find((p) => fs.existsSync(p))
}

export interface Spawned {
  script: string
  workers: Worker[]
  /** one per worker: resolves on its "ready", rejects on an error before it */
  readies: Promise<void>[]
}

export function spawn(script: string, size: number): Spawned {
  const workers: Worker[] = []
  const readies: Promise<void>[] = []
  for (let i = 0; i < size; i++) {
    const w = new Worker(script)
    w.unref()
    readies.push(
      new Promise<void>((resolve, reject) => {
        const onMsg = (m: { ready?: boolean }) => {
          if (m.ready) {
            w.off('message', onMsg)
            resolve()
          }
        }
        w.on('message', onMsg)
        w.once('error', reject)
      }),
    )
    workers.push(w)
  }
  // a pool adopting them later handles a failure; until then it must not be unhandled
  readies.forEach((r) => r.catch(() => {}))
  return { script, workers, readies }
}

let prestarted: Spawned | undefined

/**
 * Pools of this process whose workers are running (started, not closed). While there is one, no
 * pool is coming to adopt workers started ahead (a long-lived process, `ckpt serve`): none are.
 */
let runningPools = 0

/** A pool's workers started (true) or closed (false): see runningPools. */
export function poolRunning(running: boolean): void {
  runningPools += running ? 1 : -1
}

/** whether prestartWorkers() started workers no pool has adopted yet, of this script and count */
export function hasPrestarted(script: string, size: number): boolean {
  return prestarted?.script === script && prestarted.workers.length === size
}

export function takePrestarted(script: string, size: number): Spawned | undefined {
  const p = prestarted
  if (!p || p.script !== script || p.workers.length !== size) return undefined
  prestarted = undefined
  return p
}

/**
 * Starts the workers of the next pool made in this process now, ahead of it: a caller that knows
 * a large job is coming (ckpt add of a big image, before it loads the library and opens the store)
 * overlaps their start (~50-100 ms of CPU each) with that work. The pool of `size` workers that is
 * made next adopts them; unadopted, they keep no process alive. Where a pool runs already (a
 * long-lived process), none start: no pool would adopt them.
 */
export function prestartWorkers(size = defaultPoolSize()): void {
  if (prestarted || runningPools > 0 || size <= 0 || process.env.CKPT_WORKERS === '0') return
  const script = workerScript()
  if (script) prestarted = spawn(script, size)
}

/**
 * A file's 64 KiB spans hashed by the prestarted workers while the caller loads the library and
 * opens the store (prescanFiles): a full scan of it (ingestBatch) then takes the spans' digests and
 * zero flags from here instead of reading and hashing them again.
 */
export interface FilePrescan {
  /** the file's size, modification time and inode when prescanned (taken before its first read) */
  size: number
  mtimeNs: bigint
  ino: bigint
  /** per piece of PRESCAN_SPANS spans: true once its digests and flags are in, false if it failed */
  pieces: Promise<boolean>[]
  /** 32 B per span */
  digests: Uint8Array
  /** 1 where the span is all zero */
  zero: Uint8Array
}

/** spans per prescan task (8 MiB) */
export const PRESCAN_SPANS = 128

const prescans = new Map<string, FilePrescan>()

/**
 * Has the workers prestartWorkers() started hash the files' 64 KiB spans now, ahead of the scan that
 * will want them (the CLI's add, before it loads the library): their start, the library's loading and
 * the store's opening then overlap the reading and hashing. No-op without prestarted workers.
 */
export function prescanFiles(files: readonly string[]): void {
  const p = prestarted
  if (!p || p.workers.length === 0) return
  const waiting = new Map<number, (m: { result?: HashResult; error?: unknown }) => void>()
  for (const w of p.workers) {
    w.on('message', (m: { id?: number; result?: HashResult; error?: unknown }) => {
      const done = m.id !== undefined && m.id < 0 ? waiting.get(m.id) : undefined
      if (!done) return
      waiting.delete(m.id!)
      done(m)
    })
  }
  let id = -1
  let next = 0
  for (const file of files) {
    // a prescan of the file as it is now (the CLI's early start made it) is not made twice
    if (prescans.has(file) && prescanOf(file, prescans.get(file)!.size)) continue
    let st: fs.BigIntStats
    try {
      st = fs.statSync(file, { bigint: true })
    } catch {
      continue
    }
    if (!st.isFile() || st.size > BigInt(Number.MAX_SAFE_INTEGER)) continue
    const size = Number(st.size)
    const spans = Math.ceil(size / SPAN_SIZE)
    const e: FilePrescan = { size, mtimeNs: st.mtimeNs, ino: st.ino, pieces: [], digests: new Uint8Array(spans * 32), zero: new Uint8Array(spans) }
    for (let s0 = 0; s0 < spans; s0 += PRESCAN_SPANS) {
      const n = Math.min(PRESCAN_SPANS, spans - s0)
      const offsets = new Uint32Array(n)
      const lengths = new Uint32Array(n)
      for (let k = 0; k < n; k++) {
        offsets[k] = k * SPAN_SIZE
        lengths[k] = Math.min(SPAN_SIZE, size - (s0 + k) * SPAN_SIZE)
      }
      const task: HashTask = { op: 'hash', file, fileOffset: s0 * SPAN_SIZE, offsets, lengths }
      const myId = id--
      e.pieces.push(
        new Promise<boolean>((resolve) => {
          waiting.set(myId, (m) => {
            if (!m.result) return resolve(false)
            e.digests.set(m.result.digests, s0 * 32)
            e.zero.set(m.result.zero, s0)
            resolve(true)
          })
        }),
      )
      p.workers[next++ % p.workers.length]!.postMessage({ id: myId, task })
    }
    prescans.set(file, e)
  }
}

/**
 * The prescan of `file` if there is one of a file of `size` bytes that has not been modified since
 * (same size, modification time and inode now): a file written after its prescan is scanned anew.
 */
export function prescanOf(file: string, size: number): FilePrescan | undefined {
  const e = prescans.get(file)
  if (!e || e.size !== size) return undefined
  try {
    const st = fs.statSync(file, { bigint: true })
    if (st.size === BigInt(size) && st.mtimeNs === e.mtimeNs && st.ino === e.ino) return e
  } catch {}
  prescans.delete(file)
  return undefined
}

/** One worker per core, at most 4: the pool size CkptStore uses unless told otherwise. */
export function defaultPoolSize(): number {
  return Math.min(4, Math.max(1, os.availableParallelism()))
}
