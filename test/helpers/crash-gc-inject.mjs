// Child process for the gc crash-injection test: kill -9 at the Nth I/O event of a gc.
//   node crash-gc-inject.mjs <storeDir> <N> [threshold] [maxUnused]
// Events, counted only while gc runs: each pack write, fsync, fdatasync, truncate, file removal, and
// each index batch (before it and after it). At event N the process kills itself (SIGKILL), so the
// store is left exactly as a crash at that moment would leave it. N = 0: never; prints EVENTS <count>.
import fs from 'node:fs'
import { openStore } from '../../dist/src/index.js'
import { LevelKV } from '../../dist/store/level-kv.js'

const [dir, at, threshold, maxUnused] = process.argv.slice(2)
const killAt = Number(at)
let armed = false
let events = 0
const tick = () => {
  if (!armed) return
  if (++events === killAt) process.kill(process.pid, 'SIGKILL')
}
for (const name of ['writeSync', 'fsyncSync', 'fdatasyncSync', 'ftruncateSync', 'rmSync', 'unlinkSync', 'renameSync']) {
  const f = fs[name]
  fs[name] = function (...args) {
    tick()
    return f.apply(this, args)
  }
}
const fdatasync = fs.fdatasync
fs.fdatasync = function (fd, cb) {
  tick()
  return fdatasync.call(this, fd, cb)
}
const batch = LevelKV.prototype.batch
LevelKV.prototype.batch = async function (ops, options) {
  if (ops.length) tick()
  await batch.call(this, ops, options)
  if (ops.length) tick()
}
const store = await openStore(dir, { mustExist: true, threads: 0 })
armed = true
const s = await store.gc({ threshold: threshold === undefined ? undefined : Number(threshold), maxUnused: maxUnused === undefined ? undefined : Number(maxUnused) })
armed = false
await store.close()
fs.writeSync(1, `EVENTS ${events}\n${JSON.stringify(s)}\n`)
