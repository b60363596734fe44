// A worker thread of the import fuzzer (test/src/import-fuzz.test.ts). It builds the scenario bundles
// from the seed (fuzz-bundle.mjs), then runs the cases the main thread sends ({ t: 'case', i }) one at
// a time and answers each with { t: 'done', i, outcome, problem?, desc }.
//
// A case: a mutated bundle (fuzz-mutate.mjs) imported into a fresh in-memory store (after its base
// bundle, for a thin one). The invariant:
//   - rejected: a CkptError with a CKPT_* code (anything else is a crash), the catalog as before, and
//     no manifest of the bundle left in the store (the step commits run every 16 KiB here);
//     a bundle the mutation kept valid must not be rejected;
//   - imported: verifyStore(deep) finds no error or warning, every checkpoint of the catalog restores
//     (regions into buffers, blobs), and a checkpoint the scenarios know restores to their bytes.
// Uses the compiled library (dist/): run `npm run build` first.
import { parentPort, workerData } from 'node:worker_threads'
// CKPT_FUZZ_DIST: another build of the library to fuzz (e.g. an older commit's dist/src/index.js)
const { CkptError, importBundle, memoryBackend, openStore, verifyStore } = await import(process.env.CKPT_FUZZ_DIST || '../../dist/src/index.js')
import { makeRng } from './rng.mjs'
import { keyOf, scenarios } from './fuzz-bundle.mjs'
import { makeCase } from './fuzz-mutate.mjs'

const { seed } = workerData
const sc = scenarios(makeRng(seed))

/** The rng of case i: each case reproducible on its own (CKPT_FUZZ_CASE). */
export function caseSeed(seed, i) {
  return (Math.imul(seed ^ 0x5bd1e995, 0x9e3779b1) + Math.imul(i + 1, 0x85ebca6b)) >>> 0
}

function source(bytes, piece) {
  return (async function* () {
    for (let at = 0; at < bytes.length; at += piece) yield bytes.subarray(at, at + piece)
  })()
}

async function catalog(store) {
  const out = []
  for await (const e of store.log()) out.push(`${e.timeline}@${e.vtime}=${e.cid}`)
  return out
}

const RESTORE_LIMIT = 16 << 20
// SPEC.md §3.4 "Names", written out again here: an oracle independent of codecs/names.ts
const TIMELINE_NAME = /^(?=[^]{1,200}$)[A-Za-z0-9][A-Za-z0-9._:+-]*(?:\/[A-Za-z0-9][A-Za-z0-9._:+-]*)*$/
const PART_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/

async function checkImported(store, problems) {
  const findings = []
  const it = verifyStore(store, { deep: true })
  for (;;) {
    const r = await it.next()
    if (r.done) break
    if (r.value.severity === 'error' || r.value.severity === 'warning') findings.push(`${r.value.kind}: ${r.value.message}`)
  }
  if (findings.length) problems.push(`verify --deep after a successful import: ${findings.slice(0, 3).join(' | ')}`)
  for await (const e of store.log()) {
    const m = await store.manifest(e.cid)
    if (!TIMELINE_NAME.test(e.timeline) || !TIMELINE_NAME.test(m.timeline)) problems.push(`an imported timeline name breaks the rule: ${JSON.stringify(e.timeline)} / ${JSON.stringify(m.timeline)}`)
    for (const n of [...Object.keys(m.regions), ...Object.keys(m.blobs)]) if (!PART_NAME.test(n)) problems.push(`an imported region or blob name breaks the rule: ${JSON.stringify(n)}`)
    try {
      new Date(m.wall).toISOString()
    } catch {
      problems.push(`an imported manifest's wall ${m.wall} is no date (log and show would fail)`)
    }
    if (typeof m.vtime !== 'bigint' || m.vtime < 0n || m.vtime >= 2n ** 64n) problems.push(`an imported vtime ${m.vtime} is out of range`)
    const want = sc.expected.get(keyOf(e.cid.bytes))
    for (const [name, reg] of Object.entries(m.regions)) {
      try {
        if (reg.size <= RESTORE_LIMIT) {
          const out = Buffer.alloc(reg.size)
          await store.restore(e.cid, name, out)
          if (want && want[name] && !out.equals(want[name])) problems.push(`${e.cid} region ${name} restores to other bytes than the scenario's`)
        } else {
          // a huge region (legal when its blocks are there): its first and last chunks
          await store.readChunk(e.cid, name, 0)
          await store.readChunk(e.cid, name, Math.ceil(reg.size / reg.chunkSize) - 1)
        }
      } catch (err) {
        problems.push(`restore of ${e.cid} region ${name} failed: ${err?.code ?? ''} ${err?.message ?? err}`)
      }
    }
    for (const name of Object.keys(m.blobs)) {
      try {
        const b = await store.readBlob(e.cid, name)
        if (b.length !== m.blobs[name].size) problems.push(`blob ${name} of ${e.cid} has ${b.length} bytes`)
      } catch (err) {
        problems.push(`readBlob of ${e.cid} blob ${name} failed: ${err?.code ?? ''} ${err?.message ?? err}`)
      }
    }
  }
}

async function runCase(i) {
  const rng = makeRng(caseSeed(seed, i))
  let k
  try {
    k = makeCase(rng, sc)
  } catch (err) {
    return { t: 'done', i, outcome: 'harness-error', problem: `the case could not be built: ${err?.stack ?? err}`, desc: '' }
  }
  const problems = []
  let outcome
  const store = await openStore(`fuzz-${i}`, { backend: memoryBackend(), threads: 0 })
  try {
    if (k.base) await importBundle(store, source(k.base, 1 << 20))
    const before = await catalog(store)
    const blocks = store.context().repo.blocks
    const had = k.roots.map((r) => blocks.has(r))
    try {
      await importBundle(store, source(k.bytes, k.pieces), k.opts)
      outcome = 'imported'
    } catch (err) {
      if (!(err instanceof CkptError) || !/^CKPT_[A-Z_]+$/.test(err.code ?? '')) {
        problems.push(`CRASH: import threw ${err?.name ?? typeof err}${err?.code ? ` (${err.code})` : ''}: ${err?.stack ?? err}`)
        outcome = 'crash'
      } else outcome = err.code
      if (outcome !== 'crash' && k.mustImport) problems.push(`a valid bundle was rejected: ${err.code}: ${err.message}`)
      const after = await catalog(store)
      if (JSON.stringify(after) !== JSON.stringify(before)) problems.push(`a rejected import changed the catalog: ${after.length - before.length} entries`)
      k.roots.forEach((r, j) => {
        if (!had[j] && blocks.has(r)) problems.push(`a rejected import left manifest ${Buffer.from(r).toString('hex').slice(0, 16)}… in the store`)
      })
    }
    if (outcome === 'imported') {
      outcome = 'imported-clean'
      await checkImported(store, problems)
    }
  } catch (err) {
    problems.push(`the case failed outside the import: ${err?.code ?? ''} ${err?.stack ?? err}`)
    outcome = outcome ?? 'harness-error'
  } finally {
    await store.close()
  }
  return { t: 'done', i, outcome, problem: problems.length ? problems.join('\n') : undefined, desc: k.desc, size: k.bytes.length }
}

parentPort.on('message', (msg) => {
  if (msg.t !== 'case') return
  runCase(msg.i).then(
    (r) => parentPort.postMessage(r),
    (err) => parentPort.postMessage({ t: 'done', i: msg.i, outcome: 'harness-error', problem: String(err?.stack ?? err), desc: '' }),
  )
})
parentPort.postMessage({ t: 'ready' })
