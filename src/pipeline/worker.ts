import { parentPort } from 'node:worker_threads'
import { initBlake3 } from '../../codecs/blake3.js'
import { runTask, transferables, type Task } from './tasks.js'

await initBlake3()
parentPort!.on('message', (msg: { id: number; task: Task }) => {
  try {
    const r = runTask(msg.task)
    parentPort!.postMessage({ id: msg.id, result: r }, transferables(r))
  } catch (err) {
    parentPort!.postMessage({ id: msg.id, error: { message: (err as Error).message, code: (err as { code?: string }).code } })
  }
})
parentPort!.postMessage({ ready: true })
