/**
 * The server side of `ckpt serve` (SPEC.md §24): one process holds a store open (its index, worker
 * threads, caches, loaded code) and runs the `ckpt` command lines its clients send, one at a time,
 * each exactly as `main` runs it in a process of its own: in the client's working directory, with the
 * client's CKPT_* variables, its stdout and stderr relayed to the client in frames, then its exit status.
 */
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import type { CkptStore } from '../store.js'
import { main } from './main.js'
import { FRAME, SOCKET_NAME, type ServeRequest } from './serve-client.js'
import { serveStore } from './shared.js'

/** A request line longer than this is not one (the client sends argv, cwd and CKPT_* variables). */
const MAX_REQUEST = 1 << 20

export interface ServerOptions {
  /** seconds without a request before the server stops by itself; 0: never */
  idleSeconds: number
  /** called once the socket takes connections */
  onListening?: () => void
  /** closes the store (releasing its lock) when the server stops, before `ckpt serve --stop` is answered */
  close: () => Promise<void>
}

function frame(type: number, payload: Buffer): Buffer {
  const head = Buffer.allocUnsafe(5)
  head[0] = type
  head.writeUInt32BE(payload.length, 1)
  return Buffer.concat([head, payload])
}

/** Reads the request line of a connection; undefined when the client went away or sent no request. */
function readRequest(sock: net.Socket): Promise<ServeRequest | string | undefined> {
  return new Promise((resolve) => {
    let buf: Buffer = Buffer.alloc(0)
    const done = (r: ServeRequest | string | undefined) => {
      sock.off('data', onData)
      sock.pause()
      resolve(r)
    }
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      const nl = buf.indexOf(0x0a)
      if (nl < 0) {
        if (buf.length > MAX_REQUEST) done('request line too long')
        return
      }
      try {
        const r = JSON.parse(buf.subarray(0, nl).toString('utf8')) as ServeRequest
        const ok = r.v === 1 && Array.isArray(r.argv) && r.argv.every((a) => typeof a === 'string') && typeof r.cwd === 'string' && typeof r.env === 'object' && r.env !== null
        done(ok ? r : 'not a version 1 request')
      } catch {
        done('not a JSON request line')
      }
    }
    sock.on('data', onData)
    sock.once('close', () => done(undefined))
    sock.once('error', () => done(undefined))
  })
}

type Write = NodeJS.WriteStream['write']

/** stdout or stderr, for the time of one command, written to the client as frames of `type`. */
function redirect(stream: NodeJS.WriteStream, sock: net.Socket, type: number, columns: number | undefined): () => void {
  const saved = { write: stream.write, isTTY: Object.getOwnPropertyDescriptor(stream, 'isTTY'), columns: Object.getOwnPropertyDescriptor(stream, 'columns') }
  const write = (chunk: string | Uint8Array, encoding?: BufferEncoding | ((err?: Error | null) => void), cb?: (err?: Error | null) => void): boolean => {
    const callback = typeof encoding === 'function' ? encoding : cb
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, typeof encoding === 'string' ? encoding : 'utf8') : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    // a client gone (Ctrl-C) takes no output: the command runs to its end, as a process would not
    if (sock.destroyed || !sock.writable) {
      if (callback) process.nextTick(callback)
      return true
    }
    const more = sock.write(frame(type, bytes), callback ? (err) => callback(err ?? null) : undefined)
    if (!more) sock.once('drain', () => stream.emit('drain'))
    return more
  }
  stream.write = write as Write
  // a terminal on the client's side: its width (progress lines), else none
  Object.defineProperty(stream, 'isTTY', { value: columns !== undefined, configurable: true, writable: true })
  Object.defineProperty(stream, 'columns', { value: columns, configurable: true, writable: true })
  return () => {
    stream.write = saved.write
    for (const k of ['isTTY', 'columns'] as const) {
      if (saved[k]) Object.defineProperty(stream, k, saved[k])
      else delete (stream as unknown as Record<string, unknown>)[k]
    }
  }
}

/** The CKPT_* variables of this process replaced by the request's, for the time of one command. */
function withEnv(env: Record<string, string>): () => void {
  const saved: Record<string, string | undefined> = {}
  for (const k of Object.keys(process.env)) if (k.startsWith('CKPT_')) saved[k] = process.env[k]
  for (const k of Object.keys(saved)) delete process.env[k]
  for (const [k, v] of Object.entries(env)) if (k.startsWith('CKPT_') && typeof v === 'string') process.env[k] = v
  return () => {
    for (const k of Object.keys(process.env)) if (k.startsWith('CKPT_')) delete process.env[k]
    Object.assign(process.env, saved)
  }
}

/** Runs one request's command line; resolves to its exit status. */
async function runRequest(req: ServeRequest, sock: net.Socket): Promise<number> {
  const cwd = process.cwd()
  try {
    process.chdir(req.cwd)
  } catch (err) {
    sock.write(frame(FRAME.STDERR, Buffer.from(`ckpt: cannot run in ${req.cwd}: ${(err as Error).message}\n`)))
    return 1
  }
  const undo = [withEnv(req.env), redirect(process.stdout, sock, FRAME.STDOUT, req.tty?.stdout), redirect(process.stderr, sock, FRAME.STDERR, req.tty?.stderr)]
  try {
    return await main(req.argv)
  } finally {
    for (const u of undo.reverse()) u()
    process.chdir(cwd)
  }
}

/**
 * Serves the open `store` of directory `dir` until stopped (`ckpt serve --stop`, SIGINT, SIGTERM,
 * SIGHUP, or idleSeconds without a request). The caller holds the store open (and so its lock) and
 * closes it after this resolves. Resolves once the socket is removed.
 */
export async function serve(dir: string, store: CkptStore, opts: ServerOptions): Promise<void> {
  const sockPath = path.join(dir, SOCKET_NAME)
  // the store's lock is ours: a socket file there is a dead server's
  fs.rmSync(sockPath, { force: true })
  serveStore(dir, store)
  const server = net.createServer({ pauseOnConnect: true })
  let queue: Promise<void> = Promise.resolve()
  let idle: NodeJS.Timeout | undefined
  let stopping = false
  /** `ckpt serve --stop` connections, answered once the store is closed (then with `closedWith`) */
  const stoppers: net.Socket[] = []
  let closedWith: string | undefined
  let stopped!: (err?: unknown) => void
  const finished = new Promise<void>((resolve, reject) => (stopped = (err) => (err === undefined ? resolve() : reject(err))))
  const stop = () => {
    if (stopping) return
    stopping = true
    if (idle) clearTimeout(idle)
    server.close()
    void queue.then(async () => {
      serveStore(dir, undefined)
      let failed: unknown
      try {
        await opts.close()
      } catch (err) {
        failed = err ?? new Error('close failed')
      }
      fs.rmSync(sockPath, { force: true })
      closedWith = failed === undefined ? '0' : '1'
      for (const s of stoppers) s.end(frame(FRAME.EXIT, Buffer.from(closedWith)))
      stopped(failed)
    })
  }
  const armIdle = () => {
    if (idle) clearTimeout(idle)
    if (opts.idleSeconds > 0 && !stopping) idle = setTimeout(stop, opts.idleSeconds * 1000)
  }
  /** One connection, in its turn: its request read and answered (never rejects: the queue goes on). */
  const handle = async (sock: net.Socket): Promise<void> => {
    if (idle) clearTimeout(idle)
    sock.resume()
    const req = await readRequest(sock)
    const isStop = req !== undefined && typeof req !== 'string' && req.argv[0] === 'serve' && req.argv[1] === '--stop'
    if (typeof req === 'string') sock.end(Buffer.concat([frame(FRAME.STDERR, Buffer.from(`ckpt: bad serve request: ${req}\n`)), frame(FRAME.EXIT, Buffer.from('2'))]))
    // a second --stop: answered as the first, once the store is closed
    else if (isStop && closedWith !== undefined) sock.end(frame(FRAME.EXIT, Buffer.from(closedWith)))
    else if (req !== undefined && stopping && !isStop) sock.end(Buffer.concat([frame(FRAME.STDERR, Buffer.from(`ckpt: CKPT_SERVE_LOST: the server of ${dir} is stopping\n`)), frame(FRAME.EXIT, Buffer.from('1'))]))
    else if (isStop) {
      stoppers.push(sock)
      stop()
    } else if (req !== undefined) {
      const code = await runRequest(req, sock)
      if (!sock.destroyed) sock.end(frame(FRAME.EXIT, Buffer.from(String(code))))
    } else sock.destroy()
  }
  server.on('connection', (sock) => {
    sock.on('error', () => {})
    queue = queue
      .then(() => handle(sock))
      .catch(() => {
        // main() reports a command's errors itself; anything else ends this connection, not the server
        sock.destroy()
      })
      .then(armIdle)
  })
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const
  signals.forEach((s) => process.on(s, stop))
  try {
    await listen(server, dir)
  } catch (err) {
    // nothing served: the caller closes the store
    signals.forEach((s) => process.off(s, stop))
    serveStore(dir, undefined)
    throw err
  }
  armIdle()
  opts.onListening?.()
  await finished
  signals.forEach((s) => process.off(s, stop))
}

/** Binds the store's socket, mode 0600 (a path too long for sun_path relative to the store directory, as the client connects). */
function listen(server: net.Server, dir: string): Promise<void> {
  const sockPath = path.join(dir, SOCKET_NAME)
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    const umask = process.umask(0o077)
    try {
      if (Buffer.byteLength(sockPath) <= 100) server.listen(sockPath, resolve)
      else {
        const cwd = process.cwd()
        process.chdir(dir)
        try {
          server.listen(SOCKET_NAME, resolve)
        } finally {
          process.chdir(cwd)
        }
      }
    } finally {
      process.umask(umask)
    }
  })
}
