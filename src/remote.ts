/**
 * Remotes (SPEC.md §22): named remotes of a store (<store>/remotes.json: names and URLs, never a
 * credential), and an opened remote: its object store and its format object.
 */
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { CkptError } from '../codecs/errors.js'
import { CONFIG_KEY, decodeConfig, encodeJson, REMOTE_FORMAT, REMOTE_VERSION, type RemoteConfig } from '../codecs/remote-format.js'
import { openObjectStore, parseRemoteUrl, replaceFileSync, type ObjectStore } from '../store/index.js'
import { checkName } from './refs.js'

export interface RemoteEntry {
  name: string
  url: string
}

const FILE = 'remotes.json'

function readRemotes(dir: string): Record<string, string> {
  let text: string
  try {
    text = fs.readFileSync(path.join(dir, FILE), 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {}
    throw err
  }
  const v = JSON.parse(text) as { remotes?: Record<string, string> }
  return v.remotes ?? {}
}

/** The store's named remotes, by name. */
export function listRemotes(dir: string): RemoteEntry[] {
  return Object.entries(readRemotes(dir))
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([name, url]) => ({ name, url }))
}

/** Names a remote (replacing the URL of a name that exists); the URL is checked, not contacted. */
export function addRemote(dir: string, name: string, url: string): RemoteEntry {
  checkName('ref', name)
  parseRemoteUrl(url)
  const all = readRemotes(dir)
  all[name] = url
  replaceFileSync(path.join(dir, FILE), (temp) => fs.writeFileSync(temp, JSON.stringify({ remotes: all }, null, 2) + '\n'))
  return { name, url }
}

export function removeRemote(dir: string, name: string): void {
  const all = readRemotes(dir)
  if (!(name in all)) throw new CkptError('CKPT_NOT_FOUND', `no remote named ${name}`, { remote: name })
  delete all[name]
  replaceFileSync(path.join(dir, FILE), (temp) => fs.writeFileSync(temp, JSON.stringify({ remotes: all }, null, 2) + '\n'))
}

/** A REMOTE argument: a URL (anything with "://") as it is, else the URL of the store's remote of that name. */
export function remoteUrl(dir: string, remote: string): string {
  if (typeof remote !== 'string' || remote === '') throw new CkptError('CKPT_BAD_ARGUMENT', 'a remote is a name or a URL')
  if (remote.includes('://')) {
    parseRemoteUrl(remote)
    return remote
  }
  const url = readRemotes(dir)[remote]
  if (!url) throw new CkptError('CKPT_NOT_FOUND', `no remote named ${remote} (ckpt remote add NAME URL names one; a URL works too)`, { remote })
  return url
}

export interface OpenedRemote {
  url: string
  env?: Record<string, string | undefined>
  objects: ObjectStore
  config: RemoteConfig
}

/**
 * Opens a remote: its object store and format object. `create`: a remote without one gets one
 * (created once: two first pushes racing agree on the winner's).
 */
export async function openRemote(url: string, opts: { create: boolean; env?: Record<string, string | undefined>; conditionalCreate?: boolean }): Promise<OpenedRemote> {
  const objects = await openObjectStore(url, { env: opts.env, conditionalCreate: opts.conditionalCreate })
  try {
    let bytes = await objects.get(CONFIG_KEY)
    if (!bytes && opts.create) {
      const fresh: RemoteConfig = { format: REMOTE_FORMAT, version: REMOTE_VERSION, created: Date.now(), id: randomBytes(16).toString('hex') }
      await objects.put(CONFIG_KEY, encodeJson(fresh), { ifNoneMatch: true })
      bytes = await objects.get(CONFIG_KEY)
    }
    if (!bytes) throw new CkptError('CKPT_BAD_REMOTE', `${url} is not a ckpt remote (it has no ${CONFIG_KEY}; a first push makes one)`, { remote: url })
    return { url, env: opts.env, objects, config: decodeConfig(bytes) }
  } catch (err) {
    await objects.close()
    throw err
  }
}
