/**
 * The worker thread of S3SyncReader (sync-reader.ts): answers one { key, offset, length } at a time
 * with a ranged GET on its own S3 client, writing the bytes (or "missing", or an error as JSON) into
 * the shared data buffer and waking the caller through the control word.
 */
import { parentPort, workerData } from 'node:worker_threads'
import { S3ObjectStore } from './s3-store.js'
import { LENGTH, STATE, STATUS, type SyncWorkerData } from './sync-reader.js'

const wd = workerData as SyncWorkerData
const control = new Int32Array(wd.control)
const data = new Uint8Array(wd.data)
let store: Promise<S3ObjectStore> | undefined

function answer(status: number, length: number): void {
  Atomics.store(control, STATUS, status)
  Atomics.store(control, LENGTH, length)
  Atomics.store(control, STATE, 1)
  Atomics.notify(control, STATE)
}

parentPort!.on('message', async (m: { key: string; offset: number; length: number }) => {
  try {
    store ??= S3ObjectStore.open(wd.url, wd.bucket, wd.prefix, wd.options)
    let s: S3ObjectStore
    try {
      s = await store
    } catch (err) {
      store = undefined
      throw err
    }
    const bytes = await s.get(m.key, { offset: m.offset, length: Math.min(m.length, data.length) })
    if (bytes === undefined) return answer(1, 0)
    data.set(bytes)
    answer(0, bytes.length)
  } catch (err) {
    const e = err as { code?: string; message?: string; details?: Record<string, unknown> }
    const json = Buffer.from(JSON.stringify({ code: e.code, message: e.message ?? String(err), details: e.details }))
    const n = Math.min(json.length, data.length)
    data.set(json.subarray(0, n))
    answer(2, n)
  }
})
