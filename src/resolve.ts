/**
 * References to checkpoints (SPEC.md §1 "ref"): a CID (object or text), `TIMELINE@VTIME` (the nearest
 * checkpoint at or before VTIME), `TIMELINE` (its latest) or `ref:NAME` (a named ref).
 */
import { CID } from 'multiformats/cid'
import { fromCID, parseCid, type CidBytes } from '../codecs/cid.js'
import { CkptError } from '../codecs/errors.js'
import type { Repository } from '../store/index.js'
import { checkName, toVtime } from './refs.js'

export async function resolveRef(repo: Repository, ref: unknown): Promise<CidBytes> {
  const asCid = CID.asCID(ref)
  if (asCid) return fromCID(asCid)
  if (typeof ref !== 'string') throw new TypeError('a reference is a CID or a string')
  // text that parses as a CID is a CID; anything else (even base32-looking) is a timeline name
  if (/^b[a-z2-7]{20,}$/.test(ref)) {
    try {
      return parseCid(ref)
    } catch {}
  }
  if (ref.startsWith('ref:')) {
    const cid = await repo.getRef(ref.slice(4))
    if (!cid) throw new CkptError('CKPT_NOT_FOUND', `no ref named ${ref.slice(4)}`, { ref })
    return cid
  }
  const at = ref.lastIndexOf('@')
  const tl = at < 0 ? ref : ref.slice(0, at)
  checkName('timeline', tl)
  const e = at < 0 ? await repo.latest(tl) : await repo.seek(tl, toVtime(ref.slice(at + 1)))
  if (!e) throw new CkptError('CKPT_NOT_FOUND', `no checkpoint matches ${ref}`, { ref })
  return e.cid
}
