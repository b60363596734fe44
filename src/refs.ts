/** Names and references: validation shared by the library and the CLI. */
import { CkptError } from '../codecs/errors.js'

export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._:+/-]{0,199}$/
export const REGION_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/
export const MAX_VTIME = 0xffffffffffffffffn

export function checkName(kind: string, name: unknown, re = NAME_RE): string {
  if (typeof name !== 'string') throw new TypeError(`${kind} name must be a string`)
  if (!re.test(name)) throw new CkptError('CKPT_BAD_ARGUMENT', `invalid ${kind} name ${JSON.stringify(name)}`, { [kind]: name })
  return name
}

export function toVtime(v: unknown, what = 'vtime'): bigint {
  let b: bigint
  if (typeof v === 'bigint') b = v
  else if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new CkptError('CKPT_BAD_ARGUMENT', `${what} must be an integer`, { [what]: v })
    b = BigInt(v)
  } else if (typeof v === 'string' && /^\d+$/.test(v)) b = BigInt(v)
  else throw new CkptError('CKPT_BAD_ARGUMENT', `${what} must be a non-negative integer`, { [what]: String(v) })
  if (b < 0n || b > MAX_VTIME) throw new CkptError('CKPT_BAD_ARGUMENT', `${what} must be in [0, 2^64)`, { [what]: b.toString() })
  return b
}
