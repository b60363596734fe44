/**
 * Crash safety: a child process runs a seeded workload of checkpoints and acknowledges each one once
 * its promise resolved; the test kills it with SIGKILL at a random moment (including during the large
 * initial checkpoint and during store creation), then
 *   - a second process opens the same store and writes to it (the lock died with the first one),
 *   - the test opens the store: every acknowledged checkpoint is in the log, the log is a gap-free
 *     prefix of the workload, and every checkpoint in it restores byte-identical to what the child had
 *     written (recomputed here from the same seed),
 *   - the timeline continues: new checkpoints (with dirty hints) can be added and read back.
 */
import { execFile, spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { verifyStore, openStore } from '../../src/index.js'
import * as W from '../helpers/crash-workload.mjs'
import { collect } from '../helpers/bytes.js'
import { makeRng } from '../helpers/rng.js'
import { bytesEqual, removeTmpDirs, tmpStorePath } from '../helpers/tmp.js'

afterAll(removeTmpDirs)

const CHILD = fileURLToPath(new URL('../helpers/crash-child.mjs', import.meta.url))
const STEPS = 400

type RegionName = 'ram' | 'disk' | 'big'
interface State {
  ram: Uint8Array
  disk: Uint8Array
  big: Uint8Array
  blob: Uint8Array
}
const initialState = W.initialState as (seed: number) => State
const applyStep = W.applyStep as (seed: number, step: number, s: State) => { ram: unknown; disk: unknown; blob: Uint8Array }
const checkpointInput = W.checkpointInput as (step: number, s: State, hints: unknown) => Parameters<import('../../src/index.js').Timeline['checkpoint']>[0]
const vtimeOf = W.vtimeOf as (step: number) => bigint
const GEO = W.GEO as Record<RegionName, { size: number; chunkSize: number }>

interface Trial {
  seed: number
  /**
   * the kill timer starts at spawn, at BEGIN 0 (the initial 25 MiB checkpoint was just called), or at
   * the first ACK (the stream of small checkpoints with dirty hints has begun)
   */
  from: 'spawn' | 'begin0' | 'ack0'
  delay: number
  packTargetSize?: number
}

function trials(): Trial[] {
  const rng = makeRng(20240601)
  const out: Trial[] = []
  // killed inside the initial large (24 MiB) checkpoint
  for (const delay of [0, 40, 100, 170, 260]) out.push({ seed: 100 + out.length, from: 'begin0', delay })
  // killed while the store is being created or opened, or just after
  for (let k = 0; k < 2; k++) out.push({ seed: 100 + out.length, from: 'spawn', delay: rng.int(50, 450) })
  // killed somewhere in the stream of small checkpoints; some with small packs (sealed under load)
  for (let k = 0; k < 6; k++) {
    out.push({ seed: 100 + out.length, from: 'ack0', delay: rng.int(50, 800), packTargetSize: k % 2 === 0 ? 2 << 20 : undefined })
  }
  return out
}

interface Run {
  lines: string[]
  code: number | null
  signal: NodeJS.Signals | null
  stderr: string
}

function runChild(dir: string, t: Trial): Promise<Run> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, CKPT_TEST_PACK_TARGET: t.packTargetSize ? String(t.packTargetSize) : '' }
    const child = spawn(process.execPath, [CHILD, dir, String(t.seed), String(STEPS)], { stdio: ['ignore', 'pipe', 'pipe'], env })
    const lines: string[] = []
    let partial = ''
    let stderr = ''
    let timer: NodeJS.Timeout | undefined
    const arm = () => {
      timer ??= setTimeout(() => child.kill('SIGKILL'), t.delay)
    }
    if (t.from === 'spawn') arm()
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (d: string) => {
      partial += d
      const parts = partial.split('\n')
      partial = parts.pop()!
      for (const l of parts) {
        lines.push(l)
        if ((t.from === 'begin0' && l === 'BEGIN 0') || (t.from === 'ack0' && l.startsWith('ACK '))) arm()
      }
    })
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (d: string) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      if (partial) lines.push(partial) // a torn last line (not a full ACK) is ignored below
      resolve({ lines, code, signal, stderr })
    })
  })
}

function probe(dir: string): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) =>
    execFile(process.execPath, [CHILD, dir, 'probe'], { timeout: 30_000 }, (err, stdout, stderr) => (err ? reject(Object.assign(err, { stderr })) : resolve({ stdout, stderr }))),
  )
}

const outcomes: { trial: Trial; acked: number; stored: number; killed: boolean }[] = []

describe('crash safety (SIGKILL at random moments)', () => {
  for (const t of trials()) {
    it(`seed ${t.seed}: kill ${t.delay} ms after ${t.from}${t.packTargetSize ? ', small packs' : ''}`, async () => {
      const dir = tmpStorePath('ckpt-crash-')
      const run = await runChild(dir, t)
      const killed = run.signal === 'SIGKILL'
      expect(killed || (run.code === 0 && run.lines.includes('DONE')), `child failed: ${run.stderr}`).toBe(true)
      const acks = run.lines
        .map((l) => /^ACK (\d+) (b[a-z2-7]+)$/.exec(l))
        .filter((m): m is RegExpExecArray => m !== null)
        .map((m) => ({ vtime: BigInt(m[1]!), cid: m[2]! }))
      // acknowledgements come in workload order
      expect(acks.map((a) => a.vtime)).toEqual(acks.map((_, k) => vtimeOf(k)))

      // another process can open the store right away: the dead child's lock is gone
      const p = await probe(dir)
      const probed = /^PROBE (\d+)$/m.exec(p.stdout)
      expect(probed, p.stderr).not.toBeNull()
      expect(Number(probed![1])).toBeGreaterThanOrEqual(acks.length)

      const store = await openStore(dir, { packTargetSize: t.packTargetSize })
      try {
        // the probe's checkpoint is there and intact
        const pl = await collect(store.log(W.PROBE_TIMELINE as string))
        expect(pl.length).toBe(1)
        const pbuf = new Uint8Array((W.PROBE_GEO as { ram: { size: number } }).ram.size)
        await store.restore(pl[0]!.cid, 'ram', pbuf)
        expect(bytesEqual(pbuf, W.probeData() as Uint8Array)).toBe(true)

        // the log is a gap-free prefix of the workload that contains every acknowledged checkpoint
        const log = await collect(store.log(W.TIMELINE as string))
        expect(log.length).toBe(Number(probed![1]))
        expect(log.length).toBeGreaterThanOrEqual(acks.length)
        expect(log.map((e) => e.vtime)).toEqual(log.map((_, k) => vtimeOf(k)))
        for (const [k, a] of acks.entries()) expect(log[k]!.cid.toString(), `ACKed step ${k}`).toBe(a.cid)

        // every stored checkpoint restores to exactly what the child had written at that step
        const state = initialState(t.seed)
        const out = { ram: new Uint8Array(GEO.ram.size), disk: new Uint8Array(GEO.disk.size), big: new Uint8Array(GEO.big.size) }
        let bigRoot: string | undefined
        for (let k = 0; k < log.length; k++) {
          if (k > 0) applyStep(t.seed, k, state)
          const cid = log[k]!.cid
          for (const name of ['ram', 'disk'] as const) {
            out[name].fill(0x77)
            await store.restore(cid, name, out[name])
            expect(bytesEqual(out[name], state[name]), `${name} at step ${k}`).toBe(true)
          }
          expect(bytesEqual(await store.readBlob(cid, 'cpu'), state.blob), `blob at step ${k}`).toBe(true)
          // `big` is written once and carried over: same root everywhere, restored at both ends
          const m = await store.manifest(cid)
          const root = m.regions.big!.root!.toString()
          bigRoot ??= root
          expect(root).toBe(bigRoot)
          if (k === 0 || k === log.length - 1) {
            out.big.fill(0x77)
            await store.restore(cid, 'big', out.big)
            expect(bytesEqual(out.big, state.big), `big at step ${k}`).toBe(true)
          }
        }

        // verify --deep: nothing wrong; at most notes (a pack file a crash left, holding nothing
        // acknowledged: open leaves it where it is, gc deletes it)
        const vit = verifyStore(store, { deep: true })
        const leftovers = new Set<number>()
        let vr = await vit.next()
        for (; !vr.done; vr = await vit.next()) {
          expect(vr.value.severity, vr.value.message).toBe('info')
          expect(vr.value.kind).toBe('leftover-pack')
          leftovers.add(vr.value.pack!)
        }
        expect(vr.value.clean).toBe(true)

        // the index agrees with the pack files: torn tails were cut, leftovers are not in it
        const st = await store.stats()
        const packDir = path.join(dir, 'packs')
        const files = fs.readdirSync(packDir).filter((f) => f.endsWith('.pack') && !leftovers.has(Number.parseInt(f, 10)))
        expect(st.packs).toBe(files.length)
        expect(st.packBytes).toBe(files.reduce((n, f) => n + fs.statSync(path.join(packDir, f)).size, 0))
        expect(st.checkpoints).toBe(log.length + 1)

        // the timeline continues from the last stored checkpoint, with dirty hints right away
        let steps = log.length
        const tl = steps === 0 ? await store.timeline(W.TIMELINE as string, { regions: GEO }) : await store.timeline(W.TIMELINE as string)
        for (let extra = 0; extra < 3; extra++, steps++) {
          const hints = applyStep(t.seed, steps, state)
          const c = await tl.checkpoint(checkpointInput(steps, state, hints))
          expect(c.vtime).toBe(vtimeOf(steps))
          for (const name of ['ram', 'disk', 'big'] as const) {
            await store.restore(c.cid, name, out[name])
            expect(bytesEqual(out[name], state[name]), `${name} after reopen, step ${steps}`).toBe(true)
          }
        }
        expect((await collect(store.log(W.TIMELINE as string))).length).toBe(steps)
        outcomes.push({ trial: t, acked: acks.length, stored: log.length, killed })
      } finally {
        await store.close()
      }
    })
  }

  it('the trials covered a kill before the first checkpoint was acknowledged and kills mid-stream', () => {
    expect(outcomes.length).toBe(trials().length)
    const begin0 = outcomes.filter((o) => o.trial.from === 'begin0')
    expect(begin0.some((o) => o.killed && o.acked === 0)).toBe(true)
    expect(outcomes.some((o) => o.killed && o.acked > 5)).toBe(true)
  })
})
