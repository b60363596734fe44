/**
 * What every object store shares: the remote URL's parts, key checks, key order (UTF-8 bytes, as S3
 * lists), fresh stats, ranges.
 */
import { CkptError } from '../../codecs/errors.js'
import type { ObjectStoreStats } from './interface.js'

export interface RemoteUrl {
  scheme: 's3' | 'file' | 'memory'
  /** s3: the bucket */
  bucket?: string
  /** s3: the key prefix, without leading or trailing '/' ('' for the whole bucket); else '' */
  prefix: string
  /** file: the absolute directory */
  path?: string
  /** memory: the store's name */
  name?: string
}

/** A URL as it may be shown: any user:password@ part replaced by '***@'. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z0-9+.-]+:\/\/)[^/@?#]*@/i, '$1***@')
}

function bad(url: string, why: string): CkptError {
  const shown = redactUrl(url)
  return new CkptError('CKPT_BAD_REMOTE', `not a remote URL: ${JSON.stringify(shown)}: ${why}`, { url: shown })
}

const BUCKET = /^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$/i

/**
 * The parts of a remote URL: s3://BUCKET[/PREFIX], file:///ABSOLUTE/DIR, memory://NAME. Anything
 * else (another scheme, no bucket, a relative or remote-host file URL, credentials in the URL) is
 * CKPT_BAD_REMOTE.
 */
export function parseRemoteUrl(url: string): RemoteUrl {
  if (typeof url !== 'string') throw new TypeError('a remote URL is a string')
  const m = /^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)([^?#]*)$/i.exec(url)
  if (!m) {
    if (/[?#]/.test(url) && /^[a-z0-9+.-]+:\/\//i.test(url)) throw bad(url, 'a remote URL has no query or fragment')
    throw bad(url, 'expected s3://BUCKET/PREFIX, file:///ABSOLUTE/DIR or memory://NAME')
  }
  const scheme = m[1]!.toLowerCase()
  const host = m[2]!
  const rest = m[3]!
  if (host.includes('@')) throw bad(url, 'credentials never go in the URL: they come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)')
  if (scheme === 's3') {
    if (host === '') throw bad(url, 'no bucket')
    if (!BUCKET.test(host)) throw bad(url, `bad bucket name ${JSON.stringify(host)}`)
    const prefix = rest.replace(/^\/+/, '').replace(/\/+$/, '')
    if (prefix.includes('//')) throw bad(url, 'empty path segment in the prefix')
    if (prefix.split('/').some((s) => s === '.' || s === '..')) throw bad(url, "'.' or '..' in the prefix")
    return { scheme: 's3', bucket: host, prefix }
  }
  if (scheme === 'file') {
    if (host !== '' && host.toLowerCase() !== 'localhost') throw bad(url, 'a file URL names a local absolute directory: file:///DIR')
    if (!rest.startsWith('/')) throw bad(url, 'a file URL names an absolute directory: file:///DIR')
    let p: string
    try {
      p = decodeURIComponent(rest)
    } catch {
      throw bad(url, 'bad percent-encoding')
    }
    if (p.includes('\0')) throw bad(url, 'NUL in the path')
    const trimmed = p.length > 1 ? p.replace(/\/+$/, '') : p
    return { scheme: 'file', path: trimmed === '' ? '/' : trimmed, prefix: '' }
  }
  if (scheme === 'memory') {
    if (host === '' || rest.replace(/\/+$/, '') !== '') throw bad(url, 'expected memory://NAME')
    return { scheme: 'memory', name: host, prefix: '' }
  }
  throw bad(url, `unknown scheme ${JSON.stringify(scheme)} (s3, file or memory)`)
}

/** Keys are '/'-separated names: no empty, '.' or '..' segment, no leading '/', no NUL. */
export function checkKey(key: string): void {
  if (typeof key !== 'string') throw new TypeError('an object key is a string')
  if (key === '' || key.includes('\0') || key.split('/').some((s) => s === '' || s === '.' || s === '..')) {
    throw new CkptError('CKPT_BAD_ARGUMENT', `bad object key ${JSON.stringify(key)}`, { key })
  }
}

/** Key order: their UTF-8 bytes, as S3 lists them (not JavaScript's UTF-16 order). */
export function compareKeys(a: string, b: string): number {
  if (a === b) return 0
  // ASCII (the common case) orders the same either way
  if (/^[\x00-\x7f]*$/.test(a) && /^[\x00-\x7f]*$/.test(b)) return a < b ? -1 : 1
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'))
}

export function newStats(): ObjectStoreStats {
  return { gets: 0, heads: 0, puts: 0, lists: 0, deletes: 0, bytesIn: 0, bytesOut: 0 }
}

/** [start, end) of a range over an object of `size` bytes, cut at the end. */
export function cutRange(size: number, offset = 0, length?: number): [number, number] {
  if (!Number.isSafeInteger(offset) || offset < 0) throw new CkptError('CKPT_BAD_ARGUMENT', `bad range offset ${offset}`, { offset })
  if (length !== undefined && (!Number.isSafeInteger(length) || length < 0)) throw new CkptError('CKPT_BAD_ARGUMENT', `bad range length ${length}`, { length })
  const start = Math.min(offset, size)
  const end = length === undefined ? size : Math.min(size, offset + length)
  return [start, Math.max(start, end)]
}
