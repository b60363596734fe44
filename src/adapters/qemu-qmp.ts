/**
 * A small QMP client (QEMU Machine Protocol): one unix socket, JSON objects one per line. On connect
 * the server sends a greeting (`{"QMP": {version, capabilities}}`); the client answers
 * `qmp_capabilities` to leave negotiation mode, then sends `{"execute", "arguments", "id"}` and gets
 * `{"return", "id"}` or `{"error": {class, desc}, "id"}`; asynchronous `{"event", "data", "timestamp"}`
 * messages may arrive at any time.
 *
 * Every failure is a CkptError with code CKPT_QMP and `details.reason`: `connect` (no socket, nobody
 * listening), `timeout`, `closed` (the VM went away), `protocol` (not QMP), `error` (QEMU refused the
 * command: `details.class`, `details.desc`).
 */
import net from 'node:net'
import { EventEmitter } from 'node:events'
import { CkptError } from '../../codecs/errors.js'

export interface QmpGreeting {
  version: { qemu: { major: number; minor: number; micro: number }; package: string }
  capabilities: string[]
}

export interface QmpEvent {
  event: string
  data?: Record<string, unknown>
  timestamp?: { seconds: number; microseconds: number }
}

export interface QmpOptions {
  /** ms for connect + greeting + negotiation, and the default for each command (default 10,000) */
  timeoutMs?: number
}

type Pending = { id: string; command: string; resolve: (v: unknown) => void; reject: (e: unknown) => void; timer: NodeJS.Timeout }

export type QmpFailure = 'connect' | 'timeout' | 'closed' | 'protocol' | 'error' | 'state'

export function qmpError(reason: QmpFailure, message: string, details: Record<string, unknown> = {}, cause?: unknown): CkptError {
  return new CkptError('CKPT_QMP', message, { reason, ...details }, cause)
}

export class QmpClient extends EventEmitter {
  greeting!: QmpGreeting
  private buf = ''
  private pending: Pending[] = []
  private nextId = 1
  private closedErr: CkptError | undefined
  private greeted: ((g: unknown) => void) | undefined
  readonly timeoutMs: number

  private constructor(
    private readonly sock: net.Socket,
    readonly path: string,
    opts: QmpOptions,
  ) {
    super()
    this.timeoutMs = opts.timeoutMs ?? 10_000
    sock.setEncoding('utf8')
    sock.on('data', (d: string) => this.onData(d))
    sock.on('error', (err) => this.fail(qmpError('closed', `QMP connection to ${path} failed: ${err.message}`, { socket: path }, err)))
    sock.on('close', () => this.fail(qmpError('closed', `QMP connection to ${path} closed (the VM exited?)`, { socket: path })))
  }

  /** Connects, reads the greeting and negotiates capabilities. */
  static async connect(path: string, opts: QmpOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 10_000
    const sock = net.connect(path)
    const client = new QmpClient(sock, path, opts)
    const timer = setTimeout(() => {
      client.fail(qmpError('timeout', `no QMP greeting from ${path} within ${timeoutMs} ms (a QEMU QMP socket serves one client at a time: is another one connected?)`, { socket: path, timeoutMs }))
      sock.destroy()
    }, timeoutMs)
    try {
      await new Promise<void>((resolve, reject) => {
        const onErr = (err: NodeJS.ErrnoException) =>
          reject(qmpError('connect', `cannot connect to QMP socket ${path}: ${err.code ?? err.message}`, { socket: path, errno: err.code }, err))
        sock.once('error', onErr)
        sock.once('connect', () => {
          sock.off('error', onErr)
          resolve()
        })
      })
      const g = (await new Promise<unknown>((resolve, reject) => {
        if (client.closedErr) return reject(client.closedErr)
        const onFail = (e: unknown) => reject(e)
        client.once('failed', onFail)
        client.greeted = (m) => {
          client.off('failed', onFail)
          resolve(m)
        }
      })) as { QMP?: QmpGreeting }
      if (!g || typeof g !== 'object' || !g.QMP) throw qmpError('protocol', `${path} did not greet with QMP`, { socket: path })
      client.greeting = g.QMP
      await client.execute('qmp_capabilities', undefined, { timeoutMs })
      return client
    } catch (err) {
      sock.destroy()
      throw err
    } finally {
      clearTimeout(timer)
    }
  }

  get closed(): boolean {
    return this.closedErr !== undefined
  }

  /** Runs a command; resolves with its `return` value. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<T> {
    if (this.closedErr) return Promise.reject(qmpError('closed', `QMP connection to ${this.path} is closed`, { socket: this.path, command }))
    const id = `ckpt-${this.nextId++}`
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending = this.pending.filter((p) => p.id !== id)
        reject(qmpError('timeout', `QMP command ${command} got no reply within ${timeoutMs} ms`, { socket: this.path, command, timeoutMs }))
      }, timeoutMs)
      this.pending.push({ id, command, resolve: resolve as (v: unknown) => void, reject, timer })
      const msg: Record<string, unknown> = { execute: command, id }
      if (args !== undefined) msg.arguments = args
      this.sock.write(JSON.stringify(msg) + '\n')
    })
  }

  /** The next event named `name` (and matching `filter`), or a CKPT_QMP timeout. */
  waitEvent(name: string, opts: { timeoutMs?: number; filter?: (e: QmpEvent) => boolean } = {}): Promise<QmpEvent> {
    if (this.closedErr) return Promise.reject(this.closedErr)
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs
    return new Promise((resolve, reject) => {
      const onEvent = (e: QmpEvent) => {
        if (e.event !== name || (opts.filter && !opts.filter(e))) return
        done()
        resolve(e)
      }
      const onFail = (err: unknown) => {
        done()
        reject(err)
      }
      const timer = setTimeout(() => {
        done()
        reject(qmpError('timeout', `no QMP event ${name} within ${timeoutMs} ms`, { socket: this.path, event: name, timeoutMs }))
      }, timeoutMs)
      const done = () => {
        clearTimeout(timer)
        this.off('event', onEvent)
        this.off('failed', onFail)
      }
      this.on('event', onEvent)
      this.on('failed', onFail)
    })
  }

  close(): void {
    this.sock.end()
    this.sock.destroy()
    this.fail(qmpError('closed', `QMP connection to ${this.path} closed by the client`, { socket: this.path }))
  }

  private onData(d: string): void {
    this.buf += d
    let nl: number
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim()
      this.buf = this.buf.slice(nl + 1)
      if (line === '') continue
      let msg: Record<string, unknown>
      try {
        msg = JSON.parse(line)
      } catch (err) {
        this.fail(qmpError('protocol', `QMP sent a line that is not JSON: ${line.slice(0, 80)}`, { socket: this.path }, err))
        this.sock.destroy()
        return
      }
      this.dispatch(msg)
    }
    if (this.buf.length > 64 << 20) {
      this.fail(qmpError('protocol', 'QMP sent an over-long line', { socket: this.path }))
      this.sock.destroy()
    }
  }

  private dispatch(msg: Record<string, unknown>): void {
    if (this.greeted) {
      const g = this.greeted
      this.greeted = undefined
      g(msg)
      return
    }
    if (typeof msg.event === 'string') {
      this.emit('event', msg as unknown as QmpEvent)
      return
    }
    if (!('return' in msg) && !('error' in msg)) return
    // replies carry our id; one without (a parse error on QEMU's side) belongs to the oldest command
    const at = typeof msg.id === 'string' ? this.pending.findIndex((p) => p.id === msg.id) : this.pending.length ? 0 : -1
    if (at < 0) return // a reply to a command that timed out
    const p = this.pending.splice(at, 1)[0]!
    clearTimeout(p.timer)
    if ('error' in msg) {
      const e = (msg.error ?? {}) as { class?: string; desc?: string }
      p.reject(qmpError('error', `QMP ${p.command} failed: ${e.desc ?? 'unknown error'}`, { socket: this.path, command: p.command, class: e.class, desc: e.desc }))
    } else p.resolve(msg.return)
  }

  private fail(err: CkptError): void {
    if (this.closedErr) return
    this.closedErr = err
    for (const p of this.pending.splice(0)) {
      clearTimeout(p.timer)
      p.reject(qmpError(err.details.reason as QmpFailure, `QMP command ${p.command}: ${err.message}`, { ...err.details, command: p.command }, err))
    }
    if (this.listenerCount('failed') > 0) this.emit('failed', err)
    this.emit('close', err)
  }
}
