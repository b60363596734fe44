/**
 * The client side of `ckpt serve` (SPEC.md §24, "ckpt serve"): src/cli.ts asks it first thing,
 * before the library loads, whether a server holds the command line's store; if one does, the command
 * runs there and this process only relays its output and exit status. Loads node:net, node:fs and
 * node:path only: a command not served pays one stat for it.
 */
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'

/** The socket's name in the store directory. */
export const SOCKET_NAME = 'serve.sock'

/** Longest socket path bind() and connect() take (sun_path is 108 bytes with its NUL); longer: relative. */
const MAX_SOCKET_PATH = 100

/** Frame types, server to client: 1 byte type, 4 bytes big-endian length, the payload. */
export const FRAME = { STDOUT: 0x6f, STDERR: 0x65, EXIT: 0x78 } as const

/** What the client sends: one JSON line. */
export interface ServeRequest {
  v: 1
  argv: string[]
  cwd: string
  /** the client's CKPT_* environment variables (the command sees these instead of the server's) */
  env: Record<string, string>
  /** the width of the client's stdout and stderr where each is a terminal */
  tty?: { stdout?: number; stderr?: number }
}

/** Commands never sent to a server: those without a store, the server's own, and a read of stdin. */
function servable(argv: string[]): boolean {
  const [cmd, ...rest] = argv
  if (cmd === undefined || cmd.startsWith('-') || cmd === 'help' || cmd === 'serve') return false
  if (rest.includes('--help') || rest.includes('-h')) return false
  if (cmd === 'import' && rest.includes('-')) return false
  return true
}

/** The store a command line names (--store DIR, --store=DIR, else CKPT_STORE), resolved; undefined when none. */
export function commandStore(argv: string[], env: NodeJS.ProcessEnv): string | undefined {
  let dir: string | undefined
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '--') break
    if (a === '--store' && i + 1 < argv.length) dir = argv[++i]
    else if (a.startsWith('--store=')) dir = a.slice('--store='.length)
  }
  dir ??= env.CKPT_STORE || undefined
  return dir === undefined || dir === '' ? undefined : path.resolve(dir)
}

/**
 * Connects to the socket of store `dir`. A path too long for sun_path is reached relative to the
 * store directory (connect() is issued synchronously by libuv, so the working directory is changed
 * back at once).
 */
export function connectSocket(dir: string): net.Socket {
  const full = path.join(dir, SOCKET_NAME)
  if (Buffer.byteLength(full) <= MAX_SOCKET_PATH) return net.connect(full)
  const cwd = process.cwd()
  process.chdir(dir)
  try {
    return net.connect(SOCKET_NAME)
  } finally {
    process.chdir(cwd)
  }
}

/** A connection to the server of store `dir`, once it is accepted; undefined when nobody accepts it. */
export async function connected(dir: string): Promise<net.Socket | undefined> {
  let sock: net.Socket
  try {
    sock = connectSocket(dir)
  } catch {
    return undefined
  }
  const ok = await new Promise<boolean>((resolve) => {
    sock.once('connect', () => resolve(true))
    sock.once('error', () => resolve(false))
  })
  if (ok) return sock
  sock.destroy()
  return undefined
}

/** Writes to a stream, resolving when it can take more (backpressure). */
function relay(stream: NodeJS.WriteStream, bytes: Buffer): Promise<void> | undefined {
  if (stream.write(bytes)) return undefined
  return new Promise((resolve) => stream.once('drain', resolve))
}

/** Seconds a server started by CKPT_SERVE=auto waits for a command before it stops by itself. */
export const AUTO_IDLE = 60

/** A server's connection for store `dir`: the running one, else (CKPT_SERVE=auto) one started now. */
async function serverOf(dir: string, env: NodeJS.ProcessEnv): Promise<net.Socket | undefined> {
  let isSocket = false
  try {
    isSocket = fs.statSync(path.join(dir, SOCKET_NAME)).isSocket()
  } catch {
    // none
  }
  const sock = isSocket ? await connected(dir) : undefined
  // auto: only for a store that exists (a server creates what it opens; a typo must not become a store)
  if (sock || env.CKPT_SERVE !== 'auto' || !fs.existsSync(path.join(dir, 'CKPT'))) return sock
  // `ckpt serve --detach` returns once its server takes commands; another process may have
  // started one meanwhile (then this start fails on the lock, and that one answers)
  const { spawnSync } = await import('node:child_process')
  spawnSync(process.execPath, [...process.execArgv, process.argv[1]!, 'serve', '--detach', '--store', dir, '--idle', String(AUTO_IDLE)], {
    stdio: 'ignore',
    env: { ...process.env, CKPT_SERVE: '0' },
  })
  return await connected(dir)
}

/**
 * Runs the command line on the server of its store when there is one (with CKPT_SERVE=auto, one
 * started for it): resolves to its exit status, or undefined when no server took it (none running,
 * a stale socket, a command not served), and the caller runs it in this process. A server that goes
 * away during the command: exit 1 and a line saying so (CKPT_SERVE_LOST).
 */
export async function runServed(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number | undefined> {
  if (env.CKPT_SERVE === '0' || !servable(argv)) return undefined
  const dir = commandStore(argv, env)
  if (dir === undefined) return undefined
  const sock = await serverOf(dir, env)
  if (!sock) return undefined
  const ckptEnv: Record<string, string> = {}
  for (const [k, v] of Object.entries(env)) if (k.startsWith('CKPT_') && v !== undefined) ckptEnv[k] = v
  const width = (s: NodeJS.WriteStream) => (s.isTTY ? s.columns || 80 : undefined)
  const req: ServeRequest = { v: 1, argv, cwd: process.cwd(), env: ckptEnv, tty: { stdout: width(process.stdout), stderr: width(process.stderr) } }
  sock.write(JSON.stringify(req) + '\n')
  return await readFrames(sock, dir)
}

/** Relays the server's frames until its exit frame. */
async function readFrames(sock: net.Socket, dir: string): Promise<number> {
  let buf: Buffer = Buffer.alloc(0)
  let exit: number | undefined
  try {
    for await (const chunk of sock as AsyncIterable<Buffer>) {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk])
      while (buf.length >= 5) {
        const len = buf.readUInt32BE(1)
        if (buf.length < 5 + len) break
        const type = buf[0]
        const payload = buf.subarray(5, 5 + len)
        buf = buf.subarray(5 + len)
        if (type === FRAME.STDOUT) await relay(process.stdout, payload)
        else if (type === FRAME.STDERR) await relay(process.stderr, payload)
        else if (type === FRAME.EXIT) exit = Number(payload.toString('latin1'))
      }
      if (exit !== undefined) break
    }
  } catch {
    // the connection broke: said below
  }
  sock.destroy()
  if (exit !== undefined && Number.isInteger(exit)) return exit
  process.stderr.write(`ckpt: CKPT_SERVE_LOST: the server of ${dir} ended before the command did; what it did is in the store as far as it got (see: ckpt verify)\n`)
  return 1
}
