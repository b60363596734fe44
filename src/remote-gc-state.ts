/**
 * What a remote gc leaves for later (SPEC.md §22.7): its lock object, and the deletions it proposed
 * (gc/TIME-RAND.json), carried out by a later gc once the margin has passed and only where a fresh
 * mark still finds them dead. A push reads the proposals and depends on nothing they name.
 */
import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import { CkptError } from '../codecs/errors.js'
import { decodeJson, encodeJson, GC_LOCK_KEY, hex16 } from '../codecs/remote-format.js'
import type { OpenedRemote } from './remote.js'

/** A lock older than this is stale (a gc that died): the next gc takes it over (restic: 30 min). */
export const LOCK_STALE_MS = 30 * 60_000

export interface Doomed {
  key: string
  /** ms since the epoch, when proposed */
  at: number
  packs: string[]
  segments: string[]
  catalogs: string[]
}

export async function readDoomed(r: OpenedRemote, signal?: AbortSignal): Promise<Doomed[]> {
  const out: Doomed[] = []
  for await (const o of r.objects.list('gc/', { signal })) {
    const b = await r.objects.get(o.key, { signal })
    if (!b) continue
    const v = decodeJson(b, o.key)
    const list = (x: unknown) => (Array.isArray(x) ? x.filter((s): s is string => typeof s === 'string') : [])
    out.push({ key: o.key, at: typeof v.at === 'number' ? v.at : 0, packs: list(v.packs), segments: list(v.segments), catalogs: list(v.catalogs) })
  }
  return out
}

/** Every pack hash and segment name a pending gc proposal names. */
export async function doomedObjects(r: OpenedRemote, signal?: AbortSignal): Promise<Set<string>> {
  const out = new Set<string>()
  for (const d of await readDoomed(r, signal)) for (const x of [...d.packs, ...d.segments]) out.add(x)
  return out
}

export async function proposeDeletions(r: OpenedRemote, d: Omit<Doomed, 'key' | 'at'>, at: number): Promise<Doomed> {
  const key = `gc/${hex16(at)}-${randomBytes(4).toString('hex')}.json`
  await r.objects.put(key, encodeJson({ at, ...d }))
  return { key, at, ...d }
}

/** Takes the remote's gc lock (created only if absent; a stale one is taken over), or CKPT_REMOTE_LOCKED. */
export async function takeLock(r: OpenedRemote, signal?: AbortSignal): Promise<() => Promise<void>> {
  const me = { host: hostname(), pid: process.pid, since: Date.now(), token: randomBytes(8).toString('hex') }
  for (let attempt = 0; attempt < 2; attempt++) {
    if (await r.objects.put(GC_LOCK_KEY, encodeJson(me), { ifNoneMatch: true, signal })) {
      return async () => {
        const b = await r.objects.get(GC_LOCK_KEY)
        if (b && decodeJson(b, GC_LOCK_KEY).token === me.token) await r.objects.delete(GC_LOCK_KEY)
      }
    }
    const b = await r.objects.get(GC_LOCK_KEY, { signal })
    if (!b) continue
    const held = decodeJson(b, GC_LOCK_KEY)
    const since = typeof held.since === 'number' ? held.since : 0
    if (Date.now() - since < LOCK_STALE_MS) {
      throw new CkptError('CKPT_REMOTE_LOCKED', `another gc holds ${r.url} (host ${String(held.host)}, pid ${String(held.pid)}, since ${new Date(since).toISOString()}); a lock older than 30 minutes is taken over`, {
        remote: r.url,
        holder: { host: held.host, pid: held.pid, since },
      })
    }
    await r.objects.delete(GC_LOCK_KEY)
  }
  throw new CkptError('CKPT_REMOTE_LOCKED', `could not take the gc lock of ${r.url}: another gc took it meanwhile`, { remote: r.url })
}
