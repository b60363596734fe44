/**
 * A small pool of worker threads for hashing and compression, sized in one place (default: one per core,
 * at most 4). Tasks carry views of SharedArrayBuffers where they can, so chunks cross to a worker without
 * a copy. Where workers cannot start (no compiled worker script, e.g. a TypeScript-only run), tasks run
 * inline on the calling thread: same functions, same results.
 */
import fs from 'node:fs'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { CkptError, errnoCode, fsError } from '../../codecs/errors.js'
import { runTask, type CompressResult, type CompressTask, type HashResult, type HashTask, type NodeHashResult, type NodeHashTask, type ReadResult, type ReadTask, type Task, type TaskResult } from './tasks.js'

interface Pending {
  resolve: (r: TaskResult) => void
  reject: (e: Error) => void
}

function workerScript(): string | undefined {
  const here = fileURLToPath(import.meta.url)
  const candidates = here.endsWith('.js')
    ? [here.replace(/worker-pool\.js$/, 'worker.js')]
    : [fileURLToPath(new URL('../../dist/src/pipeline/worker.js', import.meta.url))]
  return candidates.find((p) => fs.existsSync(p))
}

export class WorkerPool {
  private readonly workers: Worker[] = []
  private readonly load: number[] = []
  private readonly pending = new Map<number, Pending>()
  private readonly owner = new Map<number, number>()
  private nextId = 1
  private ready: Promise<void> = Promise.resolve()

  constructor(readonly size = Math.min(4, Math.max(1, os.availableParallelism()))) {
    const script = size > 0 && process.env.CKPT_WORKERS !== '0' ? workerScript() : undefined
    if (!script) return
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
      w.on('message', (m: { id?: number; result?: TaskResult; error?: { message: string; code?: string } }) => {
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
        }
        else p.resolve(m.result!)
      })
      w.on('error', (err) => {
        for (const [id, p] of this.pending) if (this.owner.get(id) === i) p.reject(err)
      })
      this.workers.push(w)
      this.load.push(0)
    }
    this.ready = Promise.all(readies).then(() => undefined)
  }

  get threads(): number {
    return this.workers.length
  }

  /** `transfer`: buffers of the task the caller gives up (moved to the worker instead of copied) */
  run(task: HashTask, transfer?: ArrayBuffer[]): Promise<HashResult>
  run(task: CompressTask, transfer?: ArrayBuffer[]): Promise<CompressResult>
  run(task: ReadTask, transfer?: ArrayBuffer[]): Promise<ReadResult>
  run(task: NodeHashTask, transfer?: ArrayBuffer[]): Promise<NodeHashResult>
  async run(task: Task, transfer?: ArrayBuffer[]): Promise<TaskResult> {
    if (this.workers.length === 0) return runTask(task)
    await this.ready
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

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()))
    this.workers.length = 0
  }
}
