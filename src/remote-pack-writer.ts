/**
 * New packs for a remote (SPEC.md §22.2): entries framed in the pack format (§5), closed at ~32 MiB,
 * named by the BLAKE3 of their bytes and uploaded a few at once while the next one fills. What a push
 * sends and what a remote gc copies out of sparse packs.
 */
import { blake3 } from '../codecs/blake3.js'
import { encodeFooter, encodePackHeader, ENTRY_HEADER_SIZE, FOOTER_SIZE, PACK_HEADER_SIZE, writeEntry } from '../codecs/pack-format.js'
import { packKey, toHex, type SegmentEntry, type SegmentPack } from '../codecs/remote-format.js'
import type { ObjectStore } from '../store/index.js'

/** A new pack is closed at this size (kopia: 20–40 MB; big enough for few PUTs, small enough to fetch ranges of). */
export const REMOTE_PACK_TARGET = 32 << 20
/** packs uploading at once */
const PACKS_IN_FLIGHT = 3

export class RemotePackWriter {
  /** the packs written, in order */
  readonly packs: SegmentPack[] = []
  /** every entry written, `pack` an index into packs */
  readonly entries: SegmentEntry[] = []
  private readonly inFlight = new Set<Promise<void>>()
  private buf = Buffer.allocUnsafe(REMOTE_PACK_TARGET + (1 << 20))
  private at = PACK_HEADER_SIZE
  private pending: SegmentEntry[] = []

  constructor(
    private readonly objects: ObjectStore,
    private readonly signal?: AbortSignal,
  ) {}

  /** Adds an entry (an at-rest payload under its codec); may wait for an upload to make room. */
  async add(cid: Uint8Array, codec: number, rawLength: number, payload: Uint8Array, kind: number, depth = 0): Promise<void> {
    const size = ENTRY_HEADER_SIZE + payload.length
    if (this.at + size + FOOTER_SIZE > this.buf.length) {
      await this.close()
      if (PACK_HEADER_SIZE + size + FOOTER_SIZE > this.buf.length) this.buf = Buffer.allocUnsafe(PACK_HEADER_SIZE + size + FOOTER_SIZE)
    }
    this.pending.push({ cid, pack: 0, offset: this.at, storedLength: payload.length, rawLength, codec, kind, depth })
    this.at += writeEntry(this.buf, this.at, cid, codec, depth, rawLength, payload, kind)
    if (this.at >= REMOTE_PACK_TARGET) await this.close()
  }

  /** Closes the pack being filled (if it has entries) and starts its upload. */
  private async close(): Promise<void> {
    if (this.pending.length === 0) return
    this.buf.set(encodePackHeader(0), 0)
    this.buf.set(encodeFooter(this.pending.length, this.at), this.at)
    const bytes = this.buf.subarray(0, this.at + FOOTER_SIZE)
    const hash = toHex(blake3(bytes))
    const idx = this.packs.push({ hash, size: bytes.length }) - 1
    for (const e of this.pending) this.entries.push({ ...e, pack: idx })
    while (this.inFlight.size >= PACKS_IN_FLIGHT) await Promise.race(this.inFlight)
    const p: Promise<void> = this.objects.put(packKey(hash), bytes, { signal: this.signal }).then(() => void this.inFlight.delete(p))
    p.catch(() => {})
    this.inFlight.add(p)
    this.buf = Buffer.allocUnsafe(REMOTE_PACK_TARGET + (1 << 20))
    this.at = PACK_HEADER_SIZE
    this.pending = []
  }

  /** Closes the last pack and waits for every upload. */
  async finish(): Promise<void> {
    await this.close()
    await Promise.all(this.inFlight)
  }
}
