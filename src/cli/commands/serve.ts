/** `ckpt serve`: hold a store open and run the `ckpt` commands of that store in this process (SPEC.md §24). */
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { isCkptError } from '../../../codecs/errors.js'
import { COMMON, parse, storeDir } from '../args.js'
import { StoreOpenError, UsageError } from '../errors.js'
import { loadCommand } from '../registry.js'
import { connected, FRAME, SOCKET_NAME } from '../serve-client.js'
import { json, JSON_HELP, line, noPositionals, STORE_HELP, type Command } from '../shared.js'

const OPTIONS = {
  ...COMMON,
  idle: { type: 'string' },
  detach: { type: 'boolean' },
  stop: { type: 'boolean' },
} as const

/** Seconds a server waits for a command before it stops by itself, unless --idle says otherwise. */
const DEFAULT_IDLE = 600

/** Commands whose code a server loads ahead, while it waits for the first command. */
const PRELOAD = ['add', 'restore', 'log', 'verify']

/** Set in the environment of the process --detach starts: it says "ready" on stdout once it listens. */
const CHILD_ENV = 'CKPT_SERVE_CHILD'

function parseIdle(text: string | undefined): number {
  if (text === undefined) return DEFAULT_IDLE
  if (!/^\d+$/.test(text)) throw new UsageError(`--idle must be a number of seconds (0: never), not ${JSON.stringify(text)}`, 'serve')
  return Number(text)
}

/** `--stop`: asks the server of `dir` to stop and waits until it has closed the store; false when none ran. */
async function stopServer(dir: string): Promise<boolean> {
  if (!fs.existsSync(path.join(dir, SOCKET_NAME))) return false
  const sock = await connected(dir)
  if (!sock) return false
  sock.write(JSON.stringify({ v: 1, argv: ['serve', '--stop'], cwd: process.cwd(), env: {} }) + '\n')
  let got = Buffer.alloc(0)
  try {
    for await (const c of sock as AsyncIterable<Buffer>) got = Buffer.concat([got, c])
  } catch {
    // reset: as closed unread, below
  }
  // closed unread: the connection was still queued when the server stopped listening (another
  // --stop, a signal, its idle time): it is stopping, and this waits until it has closed the store
  if (got.length === 0) {
    await closing(dir)
    return true
  }
  // one exit frame: "0" once the store is closed
  if (got.length < 5 || got[0] !== FRAME.EXIT) throw new Error(`the server of ${dir} did not answer --stop`)
  if (got.subarray(5).toString('latin1') !== '0') throw new Error(`the server of ${dir} failed to close its store`)
  return true
}

/**
 * Waits while the server of `dir` closes the store: until its socket is removed (after the store is
 * closed) or the process lock.json names is gone. A holder it cannot check (another host, none named)
 * ends the wait.
 */
async function closing(dir: string): Promise<void> {
  const { readHolder } = await import('../../../store/index.js')
  for (;;) {
    const h = readHolder(dir)
    if (!fs.existsSync(path.join(dir, SOCKET_NAME)) || !h || h.host !== os.hostname() || !isAlive(h.pid)) return
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    // EPERM: alive, another user's
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** `--detach`: starts `ckpt serve` as a process of its own and waits until it takes commands; its pid. */
async function detach(dir: string, idle: number): Promise<number> {
  const cli = process.argv[1] ?? fileURLToPath(import.meta.url)
  const child = spawn(process.execPath, [...process.execArgv, cli, 'serve', '--store', dir, '--idle', String(idle)], {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, [CHILD_ENV]: '1' },
  })
  let out = ''
  let err = ''
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()))
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()))
  const ready = await new Promise<boolean>((resolve) => {
    child.stdout!.on('data', () => out.includes('ready\n') && resolve(true))
    child.once('exit', () => resolve(false))
  })
  if (!ready) {
    // the child's own error line (a locked store: exit 3) said again here
    const text = err.trim() || `ckpt serve exited with ${child.exitCode}`
    const m = /^ckpt: (CKPT_[A-Z_]+): (.*)$/m.exec(text)
    if (m) throw new StoreOpenError(new (await import('../../../codecs/errors.js')).CkptError(m[1] as 'CKPT_LOCKED', m[2]!))
    throw new Error(text)
  }
  child.stdout!.destroy()
  child.stderr!.destroy()
  child.unref()
  return child.pid!
}

/** Runs the server in this process until it stops. */
async function runServer(dir: string, idle: number, jsonOut: boolean): Promise<void> {
  const { openStore } = await import('../../store.js')
  let store
  try {
    // a long-lived process: worker threads (started now, not at the first large job) and the dedup
    // filter, as a library user's store
    store = await openStore(dir, { startWorkers: true })
  } catch (err) {
    if (isCkptError(err)) throw new StoreOpenError(err)
    throw err
  }
  const child = process.env[CHILD_ENV] === '1'
  const { serve: serveUntilStopped } = await import('../serve-server.js')
  const serving = serveUntilStopped(dir, store, {
    idleSeconds: idle,
    close: () => store.close(),
    onListening: () => {
      if (child) {
        // the starting process reads this, then closes the pipes: nothing is written to them after
        process.stdout.write('ready\n')
        process.stdout.write = (() => true) as typeof process.stdout.write
        process.stderr.write = (() => true) as typeof process.stderr.write
      } else if (jsonOut) json({ store: dir, pid: process.pid, socket: path.join(dir, SOCKET_NAME) })
      else line(`serving ${dir} (pid ${process.pid}); stop: ckpt serve --stop --store ${dir}`)
      // the commands a recording runs again and again, loaded while the server waits for its first
      void Promise.all(PRELOAD.map((c) => loadCommand(c))).catch(() => {})
    },
  })
  try {
    await serving
  } catch (err) {
    // the socket could not be bound (or the store not closed): the store is closed either way
    await store.close().catch(() => {})
    throw err
  }
}

export const serve: Command = {
  summary: 'hold a store open and run its commands in one process',
  help: `usage: ckpt serve --store DIR [--idle SECONDS] [--detach] [--json]
       ckpt serve --stop --store DIR [--json]

Holds the store open (its index, worker threads and caches, and the code of ckpt, loaded once) and
runs every ckpt command of that store in this process: a later \`ckpt add\`, \`ckpt restore\`, \`ckpt log\`
... of DIR (--store or CKPT_STORE) finds the server's socket DIR/serve.sock, sends it the command line,
and prints what the command prints and exits with its status, as if it had run itself, without the
cost of starting ckpt and opening the store. One command runs at a time; others wait their turn.
A command's own CKPT_* variables and working directory apply; CKPT_SERVE=0 runs a command in its own
process (which then finds the store locked). \`ckpt import -\` (stdin) is never sent to a server.
With CKPT_SERVE=auto in the environment, a command of an existing store without a server starts one
(as --detach --idle 60 does) and runs there: a script sets it once instead of starting and stopping.

The server stops on --stop, SIGINT, SIGTERM or SIGHUP, or after SECONDS without a command (default
${DEFAULT_IDLE}; 0: never), finishing the command it runs first, and closes the store.

  --idle SECONDS     stop after SECONDS without a command (default ${DEFAULT_IDLE}; 0: never)
  --detach           start the server in the background, print its pid once it takes commands, return
  --stop             stop the server of DIR and wait until it has closed the store (nothing to stop: exit 0)
${STORE_HELP}
${JSON_HELP}

examples:
  ckpt serve --detach --store ./ckpt-store
  ckpt add --store ./ckpt-store ram=ram.img disk=disk.raw     # runs in the server
  ckpt serve --stop --store ./ckpt-store`,
  options: OPTIONS,
  json: 'document',
  async run(argv) {
    const { values, positionals } = parse('serve', argv, OPTIONS)
    noPositionals('serve', positionals)
    const dir = storeDir(values.store, 'serve')
    if (values.stop) {
      if (values.detach || values.idle !== undefined) throw new UsageError('--stop takes neither --detach nor --idle', 'serve')
      const stopped = await stopServer(dir)
      if (values.json) json({ store: dir, stopped })
      else line(stopped ? `stopped the server of ${dir}` : `no server of ${dir}`)
      return
    }
    const idle = parseIdle(values.idle)
    if (values.detach) {
      const pid = await detach(dir, idle)
      if (values.json) json({ store: dir, pid, socket: path.join(dir, SOCKET_NAME) })
      else line(`serving ${dir} (pid ${pid}); stop: ckpt serve --stop --store ${dir}`)
      return
    }
    await runServer(dir, idle, values.json === true)
  },
}
