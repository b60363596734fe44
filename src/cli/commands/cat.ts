/** `ckpt cat`: bytes of a region (or a blob) of a checkpoint to stdout, raw or as a hexdump. */
import { CkptError } from '../../../codecs/errors.js'
import type { CkptStore } from '../../store.js'
import { COMMON, parse, parseSize, storeDir } from '../args.js'
import { UsageError } from '../errors.js'
import { json, JSON_HELP, oneRef, READ, REF_HELP, STORE_HELP, withStore, writeStdout, type Command } from '../shared.js'

const OPTIONS = {
  ...COMMON,
  region: { type: 'string' },
  blob: { type: 'string' },
  offset: { type: 'string' },
  length: { type: 'string' },
  hex: { type: 'boolean' },
} as const

/** A byte offset or count: decimal, 0x hexadecimal, or with a k/M suffix (4k = 4096). */
export function parseBytes(text: string, option: string, command: string): number {
  if (/^0[xX][0-9a-fA-F]+$/.test(text)) {
    const n = Number.parseInt(text.slice(2), 16)
    if (!Number.isSafeInteger(n)) throw new UsageError(`${option} is too large`, command)
    return n
  }
  if (!/^\d+[kKmM]?$/.test(text)) throw new UsageError(`${option} must be a number of bytes like 4096, 0x1000, 4k or 1M, not ${JSON.stringify(text)}`, command)
  return parseSize(text, option, command)
}

/** Lines of `hexdump -C`: offset, 16 bytes in two groups of 8, the printable ASCII; a repeated line is one `*`. */
export class HexDump {
  private carry = new Uint8Array(0)
  private last: Uint8Array | undefined
  private starred = false

  constructor(private at: number) {}

  /** The lines the bytes complete (those of a final partial line wait for end()). */
  push(bytes: Uint8Array): string {
    const data = this.carry.length ? concat(this.carry, bytes) : bytes
    let out = ''
    let k = 0
    for (; k + 16 <= data.length; k += 16) out += this.line(data.subarray(k, k + 16))
    this.carry = data.slice(k)
    return out
  }

  /** The rest, and the offset after the last byte. */
  end(): string {
    let out = this.carry.length ? this.line(this.carry) : ''
    out += `${hex8(this.at)}\n`
    return out
  }

  private line(b: Uint8Array): string {
    const at = this.at
    this.at += b.length
    if (b.length === 16 && this.last && equal(b, this.last)) {
      if (this.starred) return ''
      this.starred = true
      return '*\n'
    }
    this.starred = false
    this.last = b.length === 16 ? b.slice() : undefined
    let hex = ''
    let text = ''
    for (let i = 0; i < 16; i++) {
      hex += i < b.length ? ` ${b[i]!.toString(16).padStart(2, '0')}` : '   '
      if (i === 7) hex += ' '
      if (i < b.length) text += b[i]! >= 0x20 && b[i]! < 0x7f ? String.fromCharCode(b[i]!) : '.'
    }
    return `${hex8(at)} ${hex}  |${text}|\n`
  }
}

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0')
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length)
  out.set(a)
  out.set(b, a.length)
  return out
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return a.length === b.length
}

interface Range {
  offset: number
  length: number
}

/** The bytes [offset, offset + length) of a region, chunk by chunk (each read verified). */
async function* regionBytes(store: CkptStore, cid: string, region: string, chunkSize: number, r: Range): AsyncGenerator<Uint8Array> {
  const end = r.offset + r.length
  for (let i = Math.floor(r.offset / chunkSize); i * chunkSize < end; i++) {
    const c = await store.readChunk(cid, region, i)
    const from = Math.max(0, r.offset - i * chunkSize)
    const to = Math.min(c.length, end - i * chunkSize)
    yield c.subarray(from, to)
  }
}

/** What --offset and --length select of something `size` bytes long (defaults: from 0, to the end). */
function range(size: number, what: string, offset: number | undefined, length: number | undefined): Range {
  const o = offset ?? 0
  const l = length ?? Math.max(0, size - o)
  if (o + l > size) {
    throw new CkptError('CKPT_OUT_OF_RANGE', `bytes ${o}..${o + l - 1} are outside ${what} (${size} B)`, { offset: o, length: l, size })
  }
  return { offset: o, length: l }
}

export const cat: Command = {
  summary: 'print bytes of a region (or a blob) of a checkpoint, raw or as a hexdump',
  help: `usage: ckpt cat --store DIR REF (--region NAME | --blob NAME) [--offset BYTES] [--length N] [--hex]
                [--json]

Writes bytes [BYTES, BYTES + N) of a region (or a blob) of the checkpoint to stdout as they are, read
chunk by chunk, each chunk verified; with --hex as a hexdump in the format of hexdump -C (the offset
in the region, 16 bytes in hex, the printable ASCII; a line repeated is printed once, then "*"; the
offset after the last byte ends it). BYTES and N are decimal, 0x hexadecimal, or with a k or M suffix
(4k = 4096); BYTES defaults to 0 and N to the rest. A range past the end is CKPT_OUT_OF_RANGE (exit
1). With --json one document {cid, region | blob, offset, length, data}, data the bytes in base64.

${REF_HELP}

${STORE_HELP}
  --region NAME      the region to read
  --blob NAME        the blob to read instead
  --offset BYTES     the first byte (default 0)
  --length N         how many bytes (default: to the end)
  --hex              a hexdump instead of the bytes
${JSON_HELP}

examples:
  ckpt cat --store s vm1@5000 --region ram --offset 0x1000 --length 64 --hex
  ckpt cat --store s vm1 --region ram --offset 4k --length 4k > page1.bin
  ckpt cat --store s vm1 --blob cpu --hex`,
  options: OPTIONS,
  json: 'document',
  async run(argv) {
    const { values, positionals } = parse('cat', argv, OPTIONS)
    const ref = oneRef('cat', positionals)
    const dir = storeDir(values.store, 'cat')
    if ((values.region === undefined) === (values.blob === undefined)) throw new UsageError('give one of --region NAME and --blob NAME', 'cat')
    const offset = values.offset === undefined ? undefined : parseBytes(values.offset, '--offset', 'cat')
    const length = values.length === undefined ? undefined : parseBytes(values.length, '--length', 'cat')
    await withStore(dir, READ, async (store) => {
      const cid = (await store.resolve(ref)).toString()
      let r: Range
      let parts: AsyncIterable<Uint8Array> | Iterable<Uint8Array>
      if (values.region !== undefined) {
        const m = await store.manifest(cid)
        const spec = Object.prototype.hasOwnProperty.call(m.regions, values.region) ? m.regions[values.region] : undefined
        if (!spec) throw new CkptError('CKPT_UNKNOWN_REGION', `checkpoint has no region ${values.region}`, { region: values.region })
        r = range(spec.size, `region ${values.region}`, offset, length)
        parts = regionBytes(store, cid, values.region, spec.chunkSize, r)
      } else {
        const blob = await store.readBlob(cid, values.blob!)
        r = range(blob.length, `blob ${values.blob}`, offset, length)
        parts = [blob.subarray(r.offset, r.offset + r.length)]
      }
      if (values.json) {
        const all: Uint8Array[] = []
        for await (const p of parts) all.push(p)
        const what = values.region !== undefined ? { region: values.region } : { blob: values.blob }
        json({ cid, ...what, offset: r.offset, length: r.length, data: Buffer.concat(all).toString('base64') })
        return
      }
      const dump = values.hex ? new HexDump(r.offset) : undefined
      for await (const p of parts) {
        if (!dump) await writeStdout(p)
        else {
          const text = dump.push(p)
          if (text) await writeStdout(Buffer.from(text, 'latin1'))
        }
      }
      if (dump) await writeStdout(Buffer.from(dump.end(), 'latin1'))
    })
  },
}
