/**
 * A Helia node in this process: the Helia class of @helia/utils (what helia's createHelia builds, and
 * the newest Helia that runs on Node 20: helia 7 / @helia/utils 3 load undici 8, which needs Node 22)
 * on an in-memory blockstore and datastore, with BLAKE3 and dag-cbor, no libp2p networking, no block
 * brokers and no routers: a block it does not hold cannot be fetched ("No block brokers ...").
 */
import { blake3 as nobleBlake3 } from '@noble/hashes/blake3.js'
import * as dagCbor from '@ipld/dag-cbor'
import { CarReader } from '@ipld/car'
import type { CID } from 'multiformats/cid'
import { from as hasherFrom } from 'multiformats/hashes/hasher'

// Helia 5/6-era code calls Promise.withResolvers, which Node 20 lacks (Node 22 has it)
if (typeof (Promise as unknown as { withResolvers?: unknown }).withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value: function withResolvers<T>() {
      let resolve!: (v: T) => void
      let reject!: (e: unknown) => void
      const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)))
      return { promise, resolve, reject }
    },
  })
}

export const blake3Hasher = hasherFrom({ name: 'blake3', code: 0x1e, encode: (b: Uint8Array) => nobleBlake3(b) })

/** The part of a Helia node these tests use. */
export interface TestHelia {
  blockstore: unknown
  pins: {
    add(cid: CID, opts?: { signal?: AbortSignal }): AsyncIterable<CID>
    isPinned(cid: CID): Promise<boolean>
  }
  start(): Promise<void>
  stop(): Promise<void>
}

export async function startHelia(): Promise<TestHelia> {
  const { Helia } = await import('@helia/utils')
  const { MemoryBlockstore } = await import('blockstore-core')
  const { MemoryDatastore } = await import('datastore-core')
  const { defaultLogger } = await import('@libp2p/logger')
  const helia = new Helia({
    libp2p: { logger: defaultLogger() } as never,
    blockstore: new MemoryBlockstore(),
    datastore: new MemoryDatastore(),
    blockBrokers: [],
    routers: [],
    hashers: [blake3Hasher],
    codecs: [dagCbor],
  } as never) as unknown as TestHelia
  await helia.start()
  return helia
}

/** Imports a CAR (a ckpt bundle, uncompressed) into the node with @helia/car: its blocks, as given (not re-hashed). */
export async function heliaImport(helia: TestHelia, car: Uint8Array): Promise<void> {
  const { car: heliaCar } = await import('@helia/car')
  await heliaCar(helia as never).import(await CarReader.fromBytes(car))
}

/** Pins `cid` recursively; the CIDs the pin's DAG walk visited, in order (a block reached twice, twice). */
export async function heliaPin(helia: TestHelia, cid: CID): Promise<string[]> {
  const walked: string[] = []
  for await (const c of helia.pins.add(cid, { signal: AbortSignal.timeout(20_000) })) walked.push(c.toString())
  return walked
}
