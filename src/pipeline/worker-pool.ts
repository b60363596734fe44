/**
 * A small pool of worker threads for hashing and compression, sized in one place (default: one per core,
 * at most 4), started only once the work done so far pays for them (INLINE_BYTES). Tasks carry views of
 * SharedArrayBuffers where they can, so chunks cross to a worker without a copy. Until the workers are
 * ready, and where they cannot start (no compiled worker script, e.g. a TypeScript-only run), tasks run
 * inline on the calling thread: same functions, same results.
 */
import type { Worker } from 'node:worker_threads'
import { CkptError, errnoCode, fsError } from '../../codecs/errors.js'
import { runTask, type CompressResult, type CompressTask, type HashResult, type HashTask, type NodeHashResult, type NodeHashTask, type ReadResult, type ReadTask, type ScanTask, type Task, type TaskResult } from './tasks.js'
import type { CompactScan } from '../../store/worker-index.js'
import type { DeltaChainResult, DeltaChainTask } from './delta-chains.js'
import { defaultPoolSize, hasPrestarted, poolRunning, spawn, takePrestarted, workerScript } from './prestart.js'

export { defaultPoolSize, prescanFiles, prescanOf, prestartWorkers, PRESCAN_SPANS, type FilePrescan } from './prestart.js'

interface Pending {
  resolve: (r: TaskResult) => void
  reject: (e: Error) => void
}

/**
 * Bytes of task work (chunks hashed, compressed, read or node digests) the calling thread does itself
 * before the pool starts its workers. A worker costs ~50-100 ms of CPU to start (a Node isolate that
 * loads the hashing and compression modules) while one core hashes ~1 GB/s: a small checkpoint or
 * restore (one `ckpt add` of a few MiB) is done before its workers would be ready. CKPT_INLINE_BYTES
 * overrides it (0: start the workers with the first task, as before).
 */
export const INLINE_BYTES = 16 << 20

export function inlineBudget(): number {
  const v = process.env.CKPT_INLINE_BYTES
  const n = v === undefined || v === '' ? NaN : Number(v)
  return Number.isFinite(n) && n >= 0 ? n : INLINE_BYTES
}

/** The bytes a task works on, counted against the inline budget. */
export function taskBytes(task: Task): number {
  let n = 0
  if (task.op === 'nodes') return task.digests.length
  if (task.op === 'deltas') return task.deltas.length + task.bases.length
  // a pack scan is sent only to running workers (verify starts them: whenRunning)
  if (task.op === 'scan') return 0
  const lengths = task.op === 'read' ? task.rawLengths : task.lengths
  for (let i = 0; i < lengths.length; i++) n += lengths[i]!
  return n
}

export class WorkerPool {
  private readonly workers: Worker[] = []
  private readonly load: number[] = []
  private readonly pending = new Map<number, Pending>()
  private readonly owner = new Map<number, number>()
  private nextId = 1
  private readonly script: string | undefined
  /** undefined: not started; else resolves once every worker is ready */
  private ready: Promise<void> | undefined
  private isReady = false
  private startError: unknown
  private inlineLeft: number
  /** inlineBytes 0: every task waits for the workers (none runs inline meanwhile) */
  private readonly eager: boolean

  /**
   * `size` workers at most (0: every task runs on the calling thread). They start lazily: tasks run
   * inline until `inlineBytes` of work has been done (or start() is called), then on the workers
   * once they are ready; until then, inline still. inlineBytes 0 starts them now and every task waits
   * for them (as a pool did before the lazy start). Same functions, same results either way.
   */
  constructor(
    readonly size = defaultPoolSize(),
    inlineBytes = inlineBudget(),
  ) {
    this.script = size > 0 && process.env.CKPT_WORKERS !== '0' ? workerScript() : undefined
    this.inlineLeft = inlineBytes
    this.eager = inlineBytes <= 0
    // workers a caller started ahead (prestartWorkers) are this pool's from the first task on
    if (this.script && (this.eager || hasPrestarted(this.script, size))) this.start()
  }

  /** Starts the workers now (a caller that knows a large job is coming); no-op without a worker script. */
  start(): void {
    if (!this.script || this.ready) return
    const spawned = takePrestarted(this.script, this.size) ?? spawn(this.script, this.size)
    poolRunning(true)
    spawned.workers.forEach((w, i) => {
      w.on('message', (m: { id?: number; result?: TaskResult; error?: { message: string; code?: string } }) => this.settle(m))
      w.on('error', (err) => {
        for (const [id, p] of this.pending) if (this.owner.get(id) === i) p.reject(err)
      })
      this.workers.push(w)
      this.load.push(0)
    })
    const readies = spawned.readies
    this.ready = Promise.all(readies).then(
      () => void (this.isReady = true),
      (err) => {
        this.startError = err
      },
    )
  }

  private settle(m: { id?: number; result?: TaskResult; error?: { message: string; code?: string } }): void {
    if (m.id === undefined) return
    const p = this.pending.get(m.id)
    if (!p) return
    this.pending.delete(m.id)
    this.load[this.owner.get(m.id)!]!--
    this.owner.delete(m.id)
    if (m.error) {
      // a CKPT_* code as it is; an OS error (the worker reads and writes files) said as what it is
      const code = m.error.code
      if (code?.startsWith('CKPT_')) p.reject(new CkptError(code as never, m.error.message))
      else if (errnoCode({ code }) === 'CKPT_IO') p.reject(new CkptError('CKPT_IO', m.error.message, code ? { errno: code } : {}))
      else p.reject(fsError({ code }, m.error.message.replace(/^E[A-Z]+: /, '').replace(/^[a-z ]+, /, ''), code ? { errno: code } : {}))
    } else p.resolve(m.result!)
  }

  /** the workers this pool has or will start (0: every task runs on the calling thread) */
  get threads(): number {
    return this.script ? this.size : 0
  }

  /** whether the workers are running (tests, benches) */
  get started(): boolean {
    return this.isReady
  }

  /** `transfer`: buffers of the task the caller gives up (moved to the worker instead of copied) */
  run(task: HashTask, transfer?: ArrayBuffer[]): Promise<HashResult>
  run(task: CompressTask, transfer?: ArrayBuffer[]): Promise<CompressResult>
  run(task: ReadTask, transfer?: ArrayBuffer[]): Promise<ReadResult>
  run(task: NodeHashTask, transfer?: ArrayBuffer[]): Promise<NodeHashResult>
  run(task: ScanTask, transfer?: ArrayBuffer[]): Promise<CompactScan>
  run(task: DeltaChainTask, transfer?: ArrayBuffer[]): Promise<DeltaChainResult>
  async run(task: Task, transfer?: ArrayBuffer[]): Promise<TaskResult> {
    if (!this.isReady && this.script) {
      // a task that writes an output file waits for the workers: the main thread stays free for the
      // signal handlers that remove a partial file (SIGINT, SIGTERM), however slow the writes are
      const wait = this.eager || (task.op === 'read' && task.outFile !== undefined)
      if (!this.ready) {
        if (!wait) this.inlineLeft -= taskBytes(task)
        if (wait || this.inlineLeft < 0) this.start()
      }
      // inline tasks run back to back: look at the event loop before each (the workers' "ready",
      // signals, timers) or it would wait until the whole job had been done here
      if (wait) await this.ready
      else await new Promise<void>((resolve) => setImmediate(resolve))
      if (this.startError) throw this.startError
    }
    // no workers (none, or not ready yet): on this thread
    if (!this.isReady) return runTask(task)
    let best = 0
    for (let i = 1; i < this.load.length; i++) if (this.load[i]! < this.load[best]!) best = i
    const id = this.nextId++
    this.load[best]!++
    this.owner.set(id, best)
    return new Promise<TaskResult>((resolve, reject) => {
      this.pending.set(id, { resolve, reject })
      this.workers[best]!.postMessage({ id, task }, transfer)
    })
  }

  /** Starts the workers (if they are not yet) and resolves once they run: false when this pool has none. */
  async whenRunning(): Promise<boolean> {
    if (!this.script) return false
    this.start()
    await this.ready
    return this.isReady
  }

  async close(): Promise<void> {
    if (this.workers.length) poolRunning(false)
    await Promise.all(this.workers.map((w) => w.terminate()))
    this.workers.length = 0
    this.isReady = false
  }
}
