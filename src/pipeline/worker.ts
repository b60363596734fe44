import { parentPort } from 'node:worker_threads'
import { initBlake3 } from '../../codecs/blake3.js'
import { runTask, transferables, type Task } from './tasks.js'

// No top-level await: a worker terminated while its module is still evaluating an await (a pool
// closed right after it started) can abort the whole process in Node 20's V8 ("Check failed:
// (location_) != nullptr" in SourceTextModule::ExecuteAsyncModule). The module evaluates at once;
// "ready" follows the backend's load, and a task that came first hashes with the synchronous backend
// (every backend gives the same digests).
const loaded = initBlake3()
parentPort!.on('message', (msg: { id: number; task: Task }) => {
  try {
    const r = runTask(msg.task)
    parentPort!.postMessage({ id: msg.id, result: r }, transferables(r))
  } catch (err) {
    parentPort!.postMessage({ id: msg.id, error: { message: (err as Error).message, code: (err as { code?: string }).code } })
  }
})
loaded.then(
  () => parentPort!.postMessage({ ready: true }),
  (err: unknown) => {
    // as the await did: the worker fails with the error (the pool's "ready" rejects)
    setImmediate(() => {
      throw err
    })
  },
)
