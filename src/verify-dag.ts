/**
 * Verify's walk (phase 2, SPEC.md §16.1): every checkpoint of the catalog (or of the given refs) is
 * walked from its manifest: every node decodes, every link resolves to an intact block of the right
 * size. A checkpoint is compared with the previous one of its timeline, so only what changed is
 * looked at; damage in a shared subtree is still charged to every checkpoint that reaches it.
 */
import { copyOf } from '../codecs/bytes.js'
import { cidEquals, cidKey, cidToString, DAG_CBOR, RAW, type CidBytes } from '../codecs/cid.js'
import { blake3 } from '../codecs/blake3.js'
import { AT_REST } from '../codecs/compress.js'
import { isCkptError } from '../codecs/errors.js'
import { decodeManifest, type Manifest } from '../codecs/manifest.js'
import { readNodePatch, type NodePatch } from '../codecs/node-delta.js'
import type { NodeEntries } from '../codecs/tree-node.js'
import { checkCatalogAgainstRecords, ENTRY_HEADER_SIZE, readCatalog, Slices, type CatalogItem, type CheckpointRef, type Finding, type FindingKind, type TimelineRecord } from '../store/index.js'
import { changedSlots, childCid, sameDigest } from './node-compare.js'
import { Geometry } from './region-tree.js'
import { REMOTE_ONLY, type VerifyState } from './verify-state.js'

export class DagWalk {
  constructor(private readonly s: VerifyState) {}

  /** Phase 2; `impactOnly`: a second walk after phase 3 found more damage, charging checkpoints without reporting again. */
  async *dag(impactOnly = false): AsyncGenerator<Finding> {
    const refs = this.s.opts.refs && this.s.opts.refs.length ? this.s.opts.refs : undefined
    let list: CatalogItem[] = []
    if (refs) {
      for (const r of refs) {
        const cid = await this.s.ctx.resolve(r)
        const rec = await this.s.repo.checkpointRecord(cid)
        list.push({ timeline: rec?.timeline ?? '?', vtime: rec?.vtime ?? 0n, cid })
      }
    } else list = yield* readCatalog(this.s, !impactOnly)
    if (!impactOnly && !refs) {
      yield* this.catalogRecords(list)
      yield* checkCatalogAgainstRecords(this.s)
    }
    yield* this.walk(list, impactOnly)
  }

  /** The checkpoints walked in order, each against the previous one of its timeline. */
  private async *walk(list: CatalogItem[], impactOnly: boolean): AsyncGenerator<Finding> {
    const repo = this.s.repo
    const total = list.length
    let done = 0
    let prev: { timeline: string; manifest: Manifest } | undefined
    // the walk reads synchronously: the event loop has a turn every slice (a server, an emulator sharing the process)
    const slices = new Slices(1)
    for (const c of list) {
      if (slices.due()) await slices.next()
      const ref: CheckpointRef = { timeline: c.timeline, vtime: c.vtime.toString(), cid: cidToString(c.cid) }
      if (!impactOnly) this.s.checkpoints++
      let bad = false
      const hurt = (cid: CidBytes) => {
        bad = true
        const d = this.s.damaged.get(cidKey(cid))
        if (d && !d.checkpoints.some((x) => x.cid === ref.cid)) d.checkpoints.push(ref)
      }
      let m: Manifest | undefined
      if (this.s.present(c.cid) === -1) {
        hurt(c.cid)
        if (!impactOnly && this.s.table.find(c.cid) < 0) {
          yield this.s.emit({ phase: 'dag', kind: 'dangling-catalog-entry', severity: 'error', message: `catalog entry ${c.timeline}@${c.vtime} points at ${ref.cid}, which is not in the store`, cid: ref.cid, checkpoints: [ref] })
        }
      } else {
        try {
          m = decodeManifest(repo.blocks.get(c.cid))
        } catch (err) {
          if (!isCkptError(err)) throw err
          const kind: FindingKind = err.code === 'CKPT_HASH_MISMATCH' ? 'hash-mismatch' : 'bad-manifest'
          this.s.markDamaged(c.cid, kind, `manifest ${ref.cid}: ${err.message}`)
          hurt(c.cid)
        }
      }
      if (m && m.vtime !== c.vtime && this.s.opts.refs === undefined && !impactOnly) {
        yield this.s.emit({ phase: 'dag', kind: 'bad-catalog-entry', severity: 'error', message: `catalog entry ${c.timeline}@${c.vtime} points at a checkpoint of vtime ${m.vtime}`, cid: ref.cid, checkpoints: [ref] })
      }
      if (m) {
        const base = prev && prev.timeline === c.timeline ? prev.manifest : undefined
        for (const [name, reg] of Object.entries(m.regions)) {
          let geo: Geometry
          try {
            geo = new Geometry(reg.size, reg.chunkSize, reg.fanout)
          } catch {
            this.s.markDamaged(c.cid, 'bad-manifest', `manifest ${ref.cid}: region ${name} has an impossible shape`)
            hurt(c.cid)
            continue
          }
          const b = base?.regions[name]
          const baseRoot = b && b.size === reg.size && b.chunkSize === reg.chunkSize && b.fanout === reg.fanout ? b.root : null
          if (this.tree(reg.root, baseRoot, geo, geo.height, 0, hurt)) bad = true
        }
        for (const [name, blob] of Object.entries(m.blobs)) {
          let total = 0
          for (const ch of blob.chunks) {
            const i = this.s.present(ch.cid)
            if (i === -1) hurt(ch.cid)
            else if (i >= 0 && this.s.table.raw[i] !== ch.length) {
              this.s.markDamaged(ch.cid, 'bad-manifest', `blob ${name} of ${ref.cid} says its chunk ${cidToString(ch.cid)} has ${ch.length} bytes, the store has ${this.s.table.raw[i]}`)
              hurt(ch.cid)
            }
            total += ch.length
          }
          if (total !== blob.size) {
            this.s.markDamaged(c.cid, 'bad-manifest', `manifest ${ref.cid}: blob ${name}'s chunks do not add up to its size`)
            hurt(c.cid)
          }
        }
        prev = { timeline: c.timeline, manifest: m }
      }
      if (bad) this.s.damagedCheckpoints.push(ref)
      this.s.opts.onProgress?.({ phase: 'dag', done: ++done, total, unit: 'checkpoints' })
      await this.s.clean!.flush()
    }
  }

  /** Checkpoint records ('k') agree with the catalog; timeline records agree with their manifests. */
  async *catalogRecords(list: { timeline: string; vtime: bigint; cid: CidBytes }[]): AsyncGenerator<Finding> {
    const repo = this.s.repo
    const byPlace = new Map<string, CidBytes>()
    for (const c of list) byPlace.set(`${c.timeline}\u0000${c.vtime}`, c.cid)
    const seen = new Set<string>()
    const firstOf = new Map<string, CidBytes>()
    for (const c of list) {
      if (!firstOf.has(c.timeline)) firstOf.set(c.timeline, c.cid)
      const k = cidKey(c.cid)
      if (seen.has(k)) continue
      seen.add(k)
      let rec: { timeline: string; vtime: bigint } | undefined
      try {
        rec = await repo.checkpointRecord(c.cid)
      } catch {
        rec = undefined
      }
      const agrees = rec && byPlace.get(`${rec.timeline}\u0000${rec.vtime}`) && cidEquals(byPlace.get(`${rec.timeline}\u0000${rec.vtime}`)!, c.cid)
      if (!agrees) {
        this.s.indexFixable = true
        yield this.s.emit({ phase: 'dag', kind: 'bad-catalog-entry', severity: 'warning', message: `the checkpoint record of ${cidToString(c.cid)} (${c.timeline}@${c.vtime}) is ${rec ? `wrong (says ${rec.timeline}@${rec.vtime})` : 'missing or unreadable'}`, cid: cidToString(c.cid) })
      }
    }
    for (const [name, cid] of firstOf) {
      let rec: TimelineRecord | undefined
      try {
        rec = await repo.getTimeline(name)
      } catch {
        continue // reported with the catalog keys
      }
      if (!rec || this.s.present(cid) < 0) continue
      let m: Manifest
      try {
        m = decodeManifest(repo.blocks.get(cid))
      } catch {
        continue // the walk reports it
      }
      const regions = Object.fromEntries(Object.entries(m.regions).map(([k, r]) => [k, { size: r.size, chunkSize: r.chunkSize }]))
      const same = (a: Record<string, unknown>, b: Record<string, unknown>) => JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort())
      if (rec.lineage !== m.lineage || !same(rec.regions, regions)) {
        this.s.indexFixable = true
        yield this.s.emit({ phase: 'dag', kind: 'bad-catalog-entry', severity: 'warning', message: `the record of timeline ${name} disagrees with its checkpoints (${rec.lineage !== m.lineage ? 'lineage' : 'regions'})` })
      }
    }
  }

  /**
   * Walks a (sub)tree; returns whether it holds damage. Slots equal to the same slot of `base`
   * inherit its verdict; nodes seen before keep theirs.
   */
  tree(cid: CidBytes | null, base: CidBytes | null, geo: Geometry, level: number, index: number, hurt: (c: CidBytes) => void): boolean {
    if (!cid) return false
    const k = cidKey(cid)
    if (this.s.dirtyNodes.has(k)) {
      // charge the checkpoint for the damage below: find it again (cheap: only dirty paths)
      this.chargeBelow(cid, level, hurt)
      return true
    }
    // a node found clean is clean at any place of the same kind (chunk size, fan-out, level, and for the
    // last node of a level the region's size: what its slot count and chunk lengths depend on)
    const placed = cleanKey(cid, geo, level, index)
    if ((base && cidEquals(cid, base) && !this.s.dirtyNodes.has(cidKey(base))) || this.s.clean!.has(placed)) return false
    if (cid[1] !== DAG_CBOR) {
      this.s.markDamaged(cid, 'bad-node', `a raw block ${cidToString(cid)} is linked where a tree node belongs`)
      hurt(cid)
      this.s.dirtyNodes.add(k)
      return true
    }
    const at = this.s.present(cid)
    // a subtree a lazy pull left on a remote is not checked here (verify REMOTE checks it)
    if (at === REMOTE_ONLY) return false
    if (at < 0) {
      hurt(cid)
      this.s.dirtyNodes.add(k)
      return true
    }
    // a leaf stored as a change of the very node it is compared with (the usual case): only its
    // patched slots need looking at, without building the node
    if (level === 1 && base && this.s.table.codec[at] === AT_REST.nodeDelta && !this.s.dirtyNodes.has(cidKey(base))) {
      const r = this.leafPatch(cid, at, base, geo, index, hurt)
      if (r !== undefined) {
        if (r) this.s.dirtyNodes.add(k)
        else this.s.clean!.add(placed)
        return r
      }
    }
    const e = this.s.node(cid)
    if ('error' in e) {
      const kind: FindingKind = e.error.code === 'CKPT_HASH_MISMATCH' ? 'hash-mismatch' : e.error.code === 'CKPT_BAD_NODE' ? 'bad-node' : 'undecodable-block'
      this.s.markDamaged(cid, kind, `tree node ${cidToString(cid)}: ${e.error.message}`)
      hurt(cid)
      this.s.dirtyNodes.add(k)
      return true
    }
    if (e.count !== geo.nodeCount(level, index)) {
      this.s.markDamaged(cid, 'bad-node', `tree node ${cidToString(cid)} has ${e.count} slots where the region's shape needs ${geo.nodeCount(level, index)}`)
      hurt(cid)
      this.s.dirtyNodes.add(k)
      return true
    }
    if (level === 1) return this.leafAll(cid, e, geo, index, hurt)
    const be = base ? this.s.node(base) : undefined
    const same = be && !('error' in be) && be.count === e.count ? be : undefined
    // slots equal to the base's inherit its verdict: nothing to look at unless the base holds damage
    const baseDirty = base !== null && this.s.dirtyNodes.has(cidKey(base))
    let damaged = false
    const F = geo.fanout
    // with a clean base only the changed slots matter; with a dirty one every slot does
    const slots = baseDirty || !same ? allSlots(e.count) : changedSlots(e, same)
    for (const s of slots) {
      const codec = e.codecs[s]!
      if (!codec) continue
      const unchanged = same !== undefined && same.codecs[s] === codec && sameDigest(e.digests, same.digests, s)
      const child = childCid(e, s)
      if (this.tree(child, unchanged ? child : same && same.codecs[s] ? childCid(same, s) : null, geo, level - 1, index * F + s, hurt)) damaged = true
    }
    if (damaged) this.s.dirtyNodes.add(k)
    else this.s.clean!.add(placed)
    return damaged
  }

  /** A leaf's link in slot s: a raw chunk, stored intact, of the length its place needs. False if not (charged). */
  chunkOk(leaf: CidBytes, codec: number, child: CidBytes, s: number, geo: Geometry, index: number, hurt: (c: CidBytes) => void): boolean {
    if (codec !== RAW) {
      this.s.markDamaged(leaf, 'bad-node', `leaf ${cidToString(leaf)} links a dag-cbor block in slot ${s}`)
      hurt(leaf)
      return false
    }
    const i = this.s.present(child)
    if (i === REMOTE_ONLY) return true
    if (i < 0) {
      hurt(copyOf(child))
      return false
    }
    const want = geo.chunkLength(index * geo.fanout + s)
    if (this.s.table.raw[i] !== want) {
      const c = copyOf(child)
      this.s.markDamaged(c, 'bad-node', `chunk ${index * geo.fanout + s} (${cidToString(c)}) has ${this.s.table.raw[i]} bytes, the region's shape needs ${want}`)
      hurt(c)
      return false
    }
    return true
  }

  /** A leaf checked slot by slot (no base needed: every link is looked up). */
  leafAll(cid: CidBytes, e: NodeEntries, geo: Geometry, index: number, hurt: (c: CidBytes) => void): boolean {
    let damaged = false
    for (let s = 0; s < e.count; s++) {
      const codec = e.codecs[s]!
      if (codec && !this.chunkOk(cid, codec, childCid(e, s), s, geo, index, hurt)) damaged = true
    }
    if (damaged) this.s.dirtyNodes.add(cidKey(cid))
    else this.s.clean!.add(cleanKey(cid, geo, 1, index))
    return damaged
  }

  /**
   * The leaf at table index `at`, stored as a delta: when its base is `base`, checks the patched
   * slots and returns whether there is damage; undefined when the delta has another base.
   */
  leafPatch(cid: CidBytes, at: number, base: CidBytes, geo: Geometry, index: number, hurt: (c: CidBytes) => void): boolean | undefined {
    const t = this.s.table
    let payload = this.s.kept.get(at)
    let patch: NodePatch
    try {
      if (!payload) payload = copyOf(this.s.repo.blocks.io.read(t.pack[at]!, t.offset[at]! + ENTRY_HEADER_SIZE, t.stored[at]!))
      patch = readNodePatch(payload)
    } catch (err) {
      if (!isCkptError(err)) throw err
      this.s.markDamaged(cid, 'bad-node', `tree node ${cidToString(cid)}: ${err.message}`)
      hurt(cid)
      return true
    }
    if (!cidEquals(patch.baseCid, base)) return undefined
    if (patch.count !== geo.nodeCount(1, index)) {
      this.s.markDamaged(cid, 'bad-node', `tree node ${cidToString(cid)} has ${patch.count} slots where the region's shape needs ${geo.nodeCount(1, index)}`)
      hurt(cid)
      return true
    }
    let damaged = false
    const child = new Uint8Array(36)
    child[0] = 0x01
    child[2] = 0x1e
    child[3] = 0x20
    for (let p = 0; p < patch.slots.length; p++) {
      const codec = patch.codecs[p]!
      if (codec === 0) continue
      child[1] = codec
      child.set(patch.delta.subarray(patch.digestAt[p]!, patch.digestAt[p]! + 32), 4)
      if (!this.chunkOk(cid, codec, child, patch.slots[p]!, geo, index, hurt)) damaged = true
    }
    return damaged
  }

  /** Charges a checkpoint for every damaged block under a node already known to hold damage. */
  chargeBelow(cid: CidBytes, level: number, hurt: (c: CidBytes) => void): void {
    const k = cidKey(cid)
    if (this.s.damaged.has(k)) hurt(cid)
    if (!this.s.dirtyNodes.has(k)) return
    const e = this.s.node(cid)
    if ('error' in e) return
    for (let s = 0; s < e.count; s++) {
      if (!e.codecs[s]) continue
      const child = childCid(e, s)
      if (level === 1) {
        if (this.s.damaged.has(cidKey(child))) hurt(child)
      } else this.chargeBelow(child, level - 1, hurt)
    }
  }
}

/**
 * The key a node's clean verdict is kept under: its CID with the kind of place mixed into the digest
 * (chunk size, fan-out, level; the region's size for the last node of a level, whose slot count and
 * last chunk depend on it). A node reused at a place of another kind is checked again.
 */
function cleanKey(cid: CidBytes, geo: Geometry, level: number, index: number): CidBytes {
  const last = index === geo.itemsAt(level) - 1
  const kind = `${geo.chunkSize}/${geo.fanout}/${level}/${last ? geo.size : ''}`
  if (kind === '4096/256/1/' || kind === '65536/256/1/') return cid // the common places keep the CID itself (no hashing)
  const mix = blake3(Buffer.from(kind))
  const out = Uint8Array.from(cid)
  for (let k = 0; k < 16; k++) out[4 + k]! ^= mix[k]!
  return out
}


const ALL = new Map<number, number[]>()
function allSlots(n: number): number[] {
  let a = ALL.get(n)
  if (!a) ALL.set(n, (a = Array.from({ length: n }, (_, i) => i)))
  return a
}

