// Child process for the crash test. Usage:
//   node crash-child.mjs <storeDir> <seed> <steps>    runs the workload, printing READY, BEGIN <step>
//                                                     before each checkpoint() and ACK <vtime> <cid>
//                                                     once it resolved (durable), DONE at the end
//   node crash-child.mjs <storeDir> probe             opens the store, adds one checkpoint to the
//                                                     probe timeline, prints PROBE <vm checkpoints>
// CKPT_TEST_PACK_TARGET (bytes) sets a small pack target, so packs are sealed under load.
// Lines go out with fs.writeSync, so a line is in the pipe before the next statement runs.
import fs from 'node:fs'
import { openStore } from '../../dist/src/index.js'
import { applyStep, checkpointInput, GEO, initialState, PROBE_GEO, PROBE_TIMELINE, probeData, TIMELINE } from './crash-workload.mjs'

const say = (line) => fs.writeSync(1, line + '\n')
const [dir, a, b] = process.argv.slice(2)

if (a === 'probe') {
  const store = await openStore(dir)
  let n = 0
  for await (const _ of store.log(TIMELINE)) n++
  const tl = await store.timeline(PROBE_TIMELINE, { regions: PROBE_GEO })
  await tl.checkpoint({ vtime: 1, regions: { ram: { data: probeData() } } })
  await store.close()
  say(`PROBE ${n}`)
} else {
  const seed = Number(a)
  const steps = Number(b)
  const target = process.env.CKPT_TEST_PACK_TARGET
  const store = await openStore(dir, { packTargetSize: target ? Number(target) : undefined })
  const tl = await store.timeline(TIMELINE, { regions: GEO })
  const state = initialState(seed)
  say('READY')
  const inflight = []
  for (let step = 0; step < steps; step++) {
    const hints = applyStep(seed, step, state)
    say(`BEGIN ${step}`)
    const p = tl.checkpoint(checkpointInput(step, state, hints))
    inflight.push(p.then((c) => say(`ACK ${c.vtime} ${c.cid}`)))
    // the buffers may change again once copied; keep a few checkpoints in flight
    await p.copied
    if (inflight.length >= 3) await inflight.shift()
  }
  await Promise.all(inflight)
  await store.close()
  say('DONE')
}
