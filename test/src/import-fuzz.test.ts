/**
 * The import fuzzer (issue 10): structure-aware mutations of small valid bundles — manifest fields,
 * region shapes, names, blob chunk lists, tree nodes (CIDs re-computed so the hash check passes),
 * sections, header roots, CID bytes, CAR framing, options — each imported into a fresh in-memory
 * store. Every case must end one of two ways:
 *   - rejected with a CkptError whose code is CKPT_* (anything else is a crash), the catalog as it
 *     was, no manifest of the bundle left behind; a bundle the mutation kept valid is not rejected;
 *   - imported, and then `verifyStore(deep)` is clean and every checkpoint restores.
 * Cases run on worker threads (test/helpers/fuzz-import-worker.mjs, on the compiled dist/) with
 * memory limits; a watchdog fails the test naming the case if a worker makes no progress for 10 s (a
 * synchronous infinite loop cannot be interrupted from its own thread).
 *
 *   CKPT_FUZZ_SEED=N     the seed (default 20251204)
 *   CKPT_FUZZ_CASES=N    cases per run (default 10,000)
 *   CKPT_FUZZ_CASE=I     run case I alone (to reproduce a failure)
 *   CKPT_FUZZ_DIST=PATH  fuzz another build (e.g. an older commit's dist/src/index.js)
 */
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { expect, it } from 'vitest'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const WORKER = path.join(ROOT, 'test/helpers/fuzz-import-worker.mjs')
const SEED = Number(process.env.CKPT_FUZZ_SEED ?? 20251204) >>> 0
const ONLY = process.env.CKPT_FUZZ_CASE === undefined ? undefined : Number(process.env.CKPT_FUZZ_CASE)
const CASES = ONLY !== undefined ? 1 : Number(process.env.CKPT_FUZZ_CASES ?? 10_000)
const WORKERS = 2
/** no message from a worker for this long: it is stuck in its case */
const STALL_MS = 10_000
/** the whole process above this resident size: a case allocates without bound */
const RSS_LIMIT = 3 * 2 ** 30

interface Done {
  t: 'done'
  i: number
  outcome: string
  problem?: string
  desc: string
  size: number
}

/** dist/ older than the sources the fuzzer is about would fuzz stale code. */
function checkDist(): void {
  if (process.env.CKPT_FUZZ_DIST) return
  for (const [src, out] of [
    ['src/bundle.ts', 'dist/src/bundle.js'],
    ['codecs/manifest.ts', 'dist/codecs/manifest.js'],
    ['codecs/names.ts', 'dist/codecs/names.js'],
    ['src/region-tree.ts', 'dist/src/region-tree.js'],
  ]) {
    const s = fs.statSync(path.join(ROOT, src!)).mtimeMs
    const d = fs.existsSync(path.join(ROOT, out!)) ? fs.statSync(path.join(ROOT, out!)).mtimeMs : 0
    if (d < s) throw new Error(`${out} is older than ${src}: run \`npm run build\` before the import fuzzer`)
  }
}

it(`import fuzz: ${CASES} mutated bundles (seed ${SEED}) are rejected with a CKPT_* code or import clean`, async () => {
  checkDist()
  const started = Date.now()
  const outcomes = new Map<string, number>()
  const failures: string[] = []
  const queue = ONLY !== undefined ? [ONLY] : Array.from({ length: CASES }, (_, i) => i)
  let done = 0
  let bytes = 0

  await new Promise<void>((resolve) => {
    const workers: { w: Worker; case?: number; since: number; busy: boolean }[] = []
    let finished = false
    const finish = () => {
      if (finished) return
      finished = true
      clearInterval(dog)
      for (const x of workers) void x.w.terminate()
      resolve()
    }
    const fail = (msg: string) => {
      failures.push(msg)
      if (failures.length >= 20) finish()
    }
    const next = (x: (typeof workers)[number]) => {
      const i = queue.shift()
      if (i === undefined) {
        x.busy = false
        x.case = undefined
        if (workers.every((y) => !y.busy)) finish()
        return
      }
      x.case = i
      x.since = Date.now()
      x.busy = true
      x.w.postMessage({ t: 'case', i })
    }
    const dog = setInterval(() => {
      const now = Date.now()
      for (const x of workers) {
        if (x.busy && now - x.since > STALL_MS) {
          fail(`case ${x.case} (seed ${SEED}) made no progress for ${STALL_MS / 1000} s: a hang (CKPT_FUZZ_SEED=${SEED} CKPT_FUZZ_CASE=${x.case})`)
          finish()
          return
        }
      }
      const rss = process.memoryUsage().rss
      if (rss > RSS_LIMIT) {
        fail(`the process reached ${(rss / 2 ** 30).toFixed(1)} GiB while running cases ${workers.map((x) => x.case).join(', ')} (seed ${SEED})`)
        finish()
      }
    }, 500)
    for (let n = 0; n < Math.min(WORKERS, queue.length); n++) {
      const w = new Worker(WORKER, {
        workerData: { seed: SEED },
        // step commits every 16 KiB, so a failing import has committed blocks behind it
        env: { ...process.env, CKPT_TEST_STAGE_LIMIT: '16384' },
        resourceLimits: { maxOldGenerationSizeMb: 512, maxYoungGenerationSizeMb: 64, stackSizeMb: 8 },
      })
      const x = { w, case: undefined as number | undefined, since: Date.now(), busy: true }
      workers.push(x)
      w.on('message', (m: { t: string } & Partial<Done>) => {
        if (finished) return
        if (m.t === 'ready') return next(x)
        if (m.t !== 'done') return
        const d = m as Done
        done++
        bytes += d.size ?? 0
        outcomes.set(d.outcome, (outcomes.get(d.outcome) ?? 0) + 1)
        if (d.problem) fail(`case ${d.i} (CKPT_FUZZ_SEED=${SEED} CKPT_FUZZ_CASE=${d.i}) [${d.desc}] -> ${d.outcome}:\n  ${d.problem.split('\n').slice(0, 8).join('\n  ')}`)
        next(x)
      })
      w.on('error', (err) => {
        fail(`the worker running case ${x.case} (seed ${SEED}) died: ${(err as Error).stack ?? err}`)
        finish()
      })
      w.on('exit', (code) => {
        if (!finished && x.busy) {
          fail(`the worker running case ${x.case} (seed ${SEED}) exited (${code})`)
          finish()
        }
      })
    }
  })

  const seconds = (Date.now() - started) / 1000
  const sorted = [...outcomes].sort((a, b) => b[1] - a[1])
  console.log(
    `import fuzz: seed ${SEED}, ${done} cases in ${seconds.toFixed(1)} s (${WORKERS} workers, ${(bytes / 2 ** 20).toFixed(1)} MiB of bundles)\n` +
      sorted.map(([k, v]) => `  ${k.padEnd(24)} ${v}`).join('\n'),
  )
  expect(failures, failures.join('\n\n')).toEqual([])
  expect(done).toBe(CASES)
  if (ONLY === undefined && CASES >= 1000) {
    // the mutations reach every layer of checks, and many cases survive them
    for (const code of ['CKPT_BAD_MANIFEST', 'CKPT_BAD_NODE', 'CKPT_BAD_BUNDLE', 'CKPT_HASH_MISMATCH', 'CKPT_BUNDLE_INCOMPLETE', 'CKPT_BAD_CID']) {
      expect(outcomes.get(code) ?? 0, code).toBeGreaterThan(0)
    }
    expect(outcomes.get('imported-clean') ?? 0).toBeGreaterThan(CASES / 10)
  }
}, 30 * 60_000)
