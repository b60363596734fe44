// The catalog crash test's data, shared by the child that writes it (crash-catalog-child.mjs) and the
// test that checks it (test/src/crash-catalog.test.ts). A checkpoint's content is a pure function of
// its vtime, whatever timeline it is on: page i holds bytes drawn from (i, floor(vtime / period(i))),
// so the dirty pages between two vtimes are known without replaying anything, and a fork (which keeps
// its source's vtime) has its source's content.
import { makeRng } from './rng.mjs'

export const PAGE = 4096
export const PAGES = 64
export const GEO = { ram: { size: PAGE * PAGES, chunkSize: PAGE } }
/** the self-thinning timeline 'pol' */
export const POLICY = 'last=3'
/** policies the 'thin' operation applies to timeline 'rec' */
export const THIN_POLICIES = ['9@inf,last=2', '30@60,last=3', 'last=5', '6@inf']
/** vtime step between a timeline's checkpoints */
export const STEP = 3n
export const REF_NAMES = ['a', 'b', 'c', 'd']

const period = (i) => BigInt(7 + ((i * 13) % 41))

function pageSeed(i, epoch) {
  return (Math.imul(i + 1, 0x9e3779b1) ^ Math.imul(Number(epoch % 1000003n) + 1, 0x85ebca6b)) >>> 0
}

/** The ram region of every checkpoint at vtime v. */
export function content(v) {
  const out = new Uint8Array(PAGE * PAGES)
  for (let i = 0; i < PAGES; i++) {
    const s = pageSeed(i, v / period(i))
    if (s % 5 === 0) continue // a hole
    out.set(makeRng(s).bytes(PAGE), i * PAGE)
  }
  return out
}

/** The pages whose content differs between vtimes v0 and v1 (a superset is fine as a hint). */
export function dirtyBetween(v0, v1) {
  const out = []
  for (let i = 0; i < PAGES; i++) if (v0 / period(i) !== v1 / period(i)) out.push(i)
  return out
}

/** The blob 'cpu' of every checkpoint at vtime v. */
export function blobOf(v) {
  const r = makeRng((Number(v % 1000003n) * 7 + 1) >>> 0)
  return r.bytes(r.int(1, 400))
}
