/**
 * What the commands of `ckpt` (src/cli/commands/NAME.ts) share: the Command shape, opening the store
 * (withStore), the help texts several commands print, and the output helpers (text lines escaped by
 * esc(), JSON documents and JSON lines).
 */
import fs from 'node:fs'
import path from 'node:path'
import { CkptError, isCkptError } from '../../codecs/errors.js'
import type { CkptStore, OpenOptions } from '../store.js'
import type { OptionSpec } from './args.js'
import { StoreOpenError, UsageError, type ExitCode } from './errors.js'
import { esc, toJson } from './format.js'
import { SOCKET_NAME } from './serve-client.js'

/**
 * What `--json` prints on stdout (SPEC.md, "CLI exit codes"): `document`, exactly one JSON document (an error is that
 * document: {"error":{"code","message"}}); `lines`, JSON lines, one value per line (an error ends them
 * with an {"error":...} line). Each has a JSON Schema, schemas/cli/NAME.schema.json.
 */
export type JsonOutput = 'document' | 'lines'

export interface Command {
  summary: string
  /** the --help text; its first lines, up to the first empty one, are the usage (the synopsis) */
  help: string
  /** the options it takes (parseArgs' spec): the usage lines name every one */
  options: Record<string, OptionSpec>
  json: JsonOutput
  /** resolves to the exit status when it is not 0 without an error (verify: problems found) */
  run(argv: string[]): Promise<void | ExitCode>
}

/** The usage lines of a help text: its lines up to the first empty one. */
export function usageLines(help: string): string[] {
  const lines = help.split('\n')
  const end = lines.indexOf('')
  return end < 0 ? lines : lines.slice(0, end)
}

// ---------------------------------------------------------------- output

/** One line of text output, escaped (esc(): no control characters of names or meta values reach the terminal). */
export function line(text: string): void {
  process.stdout.write(esc(text) + '\n')
}

/** A note on stderr, escaped like line(). */
export function note(text: string): void {
  process.stderr.write(esc(text) + '\n')
}

let documents = 0

/** One JSON value on a line of stdout (JSON.stringify escapes control characters itself). */
export function json(value: unknown): void {
  documents++
  process.stdout.write(toJson(value) + '\n')
}

/** How many JSON values this process has printed (main: a document command prints no error after its document). */
export function jsonPrinted(): number {
  return documents
}

/** Writes binary data to stdout and waits until it has been handed to the OS. */
export function writeStdout(data: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => process.stdout.write(data, (err) => (err ? reject(err) : resolve())))
}

/** `1 checkpoint`, `2 checkpoints` */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`
}

// ---------------------------------------------------------------- arguments

export function noPositionals(command: string, positionals: string[]): void {
  if (positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`, command)
}

export function oneRef(command: string, positionals: string[]): string {
  if (positionals.length === 0) throw new UsageError('missing REF', command)
  if (positionals.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[1])}`, command)
  return positionals[0]!
}

/** A policy spec checked before the store is opened ("none": remove the policy). */
export async function checkPolicy(spec: string, command: string): Promise<string | null> {
  if (spec === 'none') return null
  const { parsePolicy } = await import('../policy.js')
  try {
    return parsePolicy(spec).text
  } catch (err) {
    if (isCkptError(err)) throw new UsageError(err.message, command)
    throw err
  }
}

// ---------------------------------------------------------------- the store

/** The store `ckpt serve` holds open in this process (serve-server.ts), with its directory. */
let served: { dir: string; store: CkptStore } | undefined

/** Whether this process is a `ckpt serve` (its own signal handlers stop it after the running command). */
export function serving(): boolean {
  return served !== undefined
}

/**
 * A directory's path with symlinks resolved (as given where it does not exist). store/level-kv.ts has
 * its twin: src/ reaches store/ only through store/index.ts, which a CLI process loads only when it
 * opens a store (not for --help, usage errors or a command sent to a server).
 */
function realPath(dir: string): string {
  try {
    return fs.realpathSync(dir)
  } catch {
    return path.resolve(dir)
  }
}

/** Sets (or, with no store, clears) the store this process serves: withStore of its directory uses it. */
export function serveStore(dir: string, store: CkptStore | undefined): void {
  served = store ? { dir: realPath(dir), store } : undefined
}

/**
 * Opens the store, runs fn, always closes (releasing the LevelDB lock). Errors of the open itself are
 * StoreOpenErrors (exit 3). Commands that only read pass `mustExist` so a typo never creates a store.
 * In a `ckpt serve` process, the served store's directory gives the open store, left open.
 */
export async function withStore<T>(dir: string, opts: OpenOptions, fn: (store: CkptStore) => Promise<T>): Promise<T> {
  if (served && realPath(dir) === served.dir) return await fn(served.store)
  // loaded here, not at startup: --help and usage errors need none of the library's dependencies
  const { openStore } = await import('../store.js')
  let store: CkptStore
  try {
    // one command is a short-lived process: filling the dedup filter would read every block entry of
    // the index at each start (O(store)); without it a "stored already?" is one index lookup. import,
    // which asks that of every block of a bundle, opts back in
    store = await openStore(dir, { dedupFilter: false, ...opts })
  } catch (err) {
    if (isCkptError(err) && err.code === 'CKPT_LOCKED' && fs.existsSync(path.join(dir, SOCKET_NAME))) {
      const msg = `${err.message}; a ckpt serve may hold it (its commands go through it unless CKPT_SERVE=0; stop it: ckpt serve --stop --store ${dir})`
      throw new StoreOpenError(new CkptError('CKPT_LOCKED', msg, err.details, err))
    }
    if (isCkptError(err)) throw new StoreOpenError(err)
    throw err
  }
  // what the open found and did (an index rebuilt from the packs, a read from the packs alone)
  for (const n of store.openNotes) note(`ckpt: note: ${n.message}`)
  let ok = false
  try {
    const r = await fn(store)
    ok = true
    return r
  } finally {
    try {
      await store.close()
    } catch (err) {
      // a failure to close matters only when nothing failed before it
      if (ok) throw err
    }
  }
}

/**
 * Read-only commands: never create a store, never write to one (an index that cannot be used is
 * replaced by one built in memory from the packs); no worker threads for a few small reads.
 */
export const READ: OpenOptions = { mustExist: true, threads: 0, readOnly: true }

/** Commands that change an existing store's catalog: no worker threads. */
export const EXISTING: OpenOptions = { mustExist: true, threads: 0 }

// ---------------------------------------------------------------- help texts

export const STORE_HELP = `  --store DIR        the store (default: $CKPT_STORE)`
export const JSON_HELP = `  --json             machine-readable output (errors too: {"error":{"code","message"}})`
export const QUIET_HELP = `  --quiet, -q        no progress line on stderr (there is one only when stderr is a terminal)`
export const REF_HELP = `REF is a checkpoint CID, TIMELINE@VTIME (the nearest checkpoint at or before VTIME), TIMELINE
(its latest checkpoint) or ref:NAME (a ref set by ckpt ref).`

export const POLICY_HELP = `SPEC is a comma-separated list of rules, in virtual time (vtime read as nanoseconds when a unit
is given: ns us ms s m h d; a bare number is raw vtime units):
  INTERVAL@HORIZON   keep one checkpoint per INTERVAL (the oldest in each INTERVAL-aligned bucket)
                     among those at most HORIZON older than the newest; HORIZON may be inf
  all@HORIZON        keep every checkpoint within HORIZON
  last=N             keep the newest N whatever their age
A checkpoint older than every horizon is dropped. Never dropped: the newest checkpoint, checkpoints
with a label or pin in their meta, and checkpoints a ref names (ckpt ref).`
