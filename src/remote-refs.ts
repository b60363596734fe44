/**
 * Named refs on a remote (SPEC.md §22.3): refs/NAME/SEQ objects, each written once (create-only),
 * the highest SEQ the ref's value: { cid, timeline, vtime, at }. A push sends the refs of this store
 * whose checkpoints are on the remote; a pull takes the remote's refs whose checkpoints it pulled (or
 * asked for by ref:NAME), never moving a ref of this store that names another checkpoint.
 */
import { cidToString, parseCid, type CidBytes } from '../codecs/cid.js'
import { CkptError } from '../codecs/errors.js'
import { decodeJson, encodeJson, refKey, refPrefix } from '../codecs/remote-format.js'
import type { StoreContext } from './context.js'
import type { OpenedRemote } from './remote.js'

export interface RemoteRef {
  name: string
  seq: number
  cid: string
  timeline: string
  vtime: string
}

/** The remote's current value of a ref (its highest SEQ), or undefined. */
export async function readRemoteRef(r: OpenedRemote, name: string, signal?: AbortSignal): Promise<RemoteRef | undefined> {
  let last: string | undefined
  for await (const o of r.objects.list(refPrefix(name), { signal })) if (/\/[0-9a-f]{16}$/.test(o.key)) last = o.key
  if (!last) return undefined
  const b = await r.objects.get(last, { signal })
  if (!b) return undefined
  const v = decodeJson(b, last)
  if (typeof v.cid !== 'string' || typeof v.timeline !== 'string' || typeof v.vtime !== 'string') throw new CkptError('CKPT_BAD_REMOTE', `remote object ${last} is not a ref`, { key: last })
  return { name, seq: parseInt(last.slice(-16), 16), cid: v.cid, timeline: v.timeline, vtime: v.vtime }
}

/** Every ref of the remote, current values. */
export async function remoteRefs(r: OpenedRemote, signal?: AbortSignal): Promise<RemoteRef[]> {
  const names = new Set<string>()
  for await (const o of r.objects.list('refs/', { signal })) names.add(decodeURIComponent(o.key.slice(5, o.key.lastIndexOf('/'))))
  const out: RemoteRef[] = []
  for (const n of [...names].sort()) {
    const ref = await readRemoteRef(r, n, signal)
    if (ref) out.push(ref)
  }
  return out
}

/**
 * Sends this store's refs (those named, else all) whose checkpoints the remote lists (`onRemote`):
 * a new SEQ where the value differs. Returns the names sent.
 */
export async function pushRefs(ctx: StoreContext, r: OpenedRemote, onRemote: (timeline: string, vtime: bigint, cid: string) => boolean, only: Set<string> | undefined, signal?: AbortSignal): Promise<string[]> {
  const sent: string[] = []
  for await (const ref of ctx.repo.refs()) {
    if (only && !only.has(ref.name)) continue
    const at = await ctx.repo.checkpointRecord(ref.cid)
    const cid = cidToString(ref.cid)
    if (!at || !onRemote(at.timeline, at.vtime, cid)) continue
    const there = await readRemoteRef(r, ref.name, signal)
    if (there?.cid === cid) continue
    const body = encodeJson({ cid, timeline: at.timeline, vtime: at.vtime.toString(), at: Date.now() })
    // create-only: a racing writer takes a SEQ, this one the next (the highest SEQ wins)
    for (let seq = (there?.seq ?? 0) + 1; !(await r.objects.put(refKey(ref.name, seq), body, { ifNoneMatch: true, signal })); seq++) {}
    sent.push(ref.name)
  }
  return sent
}

/** Sets this store's refs to the remote's values that name checkpoints it now has; a ref here naming another checkpoint stays. */
export async function pullRefs(ctx: StoreContext, refs: RemoteRef[]): Promise<string[]> {
  const set: string[] = []
  for (const ref of refs) {
    const cid: CidBytes = parseCid(ref.cid)
    if (!(await ctx.repo.checkpointRecord(cid))) continue
    const here = await ctx.repo.getRef(ref.name)
    if (here && cidToString(here) !== ref.cid) continue
    if (!here) {
      await ctx.repo.setRef(ref.name, cid)
      set.push(ref.name)
    }
  }
  return set
}
