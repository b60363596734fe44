/**
 * S3 servers for the tests: s3rver (a fake S3 on a worker thread of this process, on 127.0.0.1, an ephemeral port, a
 * fresh temp directory) and, when CI sets CKPT_TEST_S3_URL and AWS_*, an external one (a Ceph RADOS
 * Gateway). Stores take these env records explicitly (openObjectStore(url, { env })): tests never
 * touch process.env.
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'

import { loadS3Sdk, makeS3Client, s3Settings } from '../../store/remote/s3-store.js'

const require = createRequire(import.meta.url)

export interface TestS3 {
  /** s3://BUCKET/PREFIX (prefix: default a fresh one per call) */
  url(prefix?: string): string
  env: Record<string, string>
  close(): Promise<void>
}

// s3rver runs on a worker thread of its own: a test that blocks the main thread (a SyncRangeReader
// waiting in Atomics.wait) must not stop the server it waits for. Two mends, in that thread only:
// - s3rver makes ListObjectsV2 continuation tokens with DES, which OpenSSL 3 (Node >= 17) lacks: every
//   truncated listing was HTTP 500. AES-128-CBC stands in (the token stays opaque to clients).
// - s3rver lists by walking its directory in readdir order (hash order on ext4), so keys came unsorted
//   and paging lost some. Its walk now sees names in S3 key order (UTF-8 bytes; a directory as NAME/).
const SERVER = `
const { parentPort, workerData } = require('node:worker_threads')
const { createRequire } = require('node:module')
const crypto = require('node:crypto')
const path = require('node:path')
const fromS3rver = createRequire(workerData.module)
const desToAes = (make) => (alg, key, iv, ...rest) =>
  alg === 'des' ? make('aes-128-cbc', Buffer.concat([key, key]), Buffer.concat([iv, iv]), ...rest) : make(alg, key, iv, ...rest)
crypto.createCipheriv = desToAes(crypto.createCipheriv.bind(crypto))
crypto.createDecipheriv = desToAes(crypto.createDecipheriv.bind(crypto))
const fsx = fromS3rver('fs-extra')
const readdirSync = fsx.readdirSync
const SUFFIX = /\\._S3rver_(object|metadata\\.json|object\\.md5)$/
fsx.readdirSync = function (dir, opts) {
  const names = readdirSync.call(this, dir, opts)
  if (opts !== undefined || !Array.isArray(names)) return names
  const keyOf = (n) => {
    try {
      if (fsx.statSync(path.join(dir, n)).isDirectory()) return n + '/'
    } catch {}
    return n.replace(SUFFIX, '')
  }
  return names
    .map((n) => [Buffer.from(keyOf(n)), n])
    .sort((a, b) => Buffer.compare(a[0], b[0]) || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map((x) => x[1])
}
const S3rver = require(workerData.module)
const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: workerData.dir, configureBuckets: [{ name: workerData.bucket, configs: [] }] })
server.run().then((addr) => parentPort.postMessage({ port: addr.port }), (err) => parentPort.postMessage({ error: String(err && err.stack || err) }))
parentPort.on('message', (m) => { if (m === 'close') server.close().then(() => parentPort.postMessage({ closed: true }), () => parentPort.postMessage({ closed: true })) })
`

/** Starts s3rver on 127.0.0.1 (port 0), silent, in a temp dir, with one bucket of a unique name. */
export async function startS3rver(): Promise<TestS3> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-s3rver-'))
  const bucket = `ckpt-test-${crypto.randomBytes(4).toString('hex')}`
  const worker = new Worker(SERVER, { eval: true, workerData: { module: require.resolve('s3rver'), dir, bucket } })
  worker.unref()
  const port = await new Promise<number>((resolve, reject) => {
    worker.once('message', (m: { port?: number; error?: string }) => (m.port ? resolve(m.port) : reject(new Error(`s3rver did not start: ${m.error}`))))
    worker.once('error', reject)
  })
  const env = {
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
    AWS_REGION: 'us-east-1',
    AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${port}`,
  }
  let n = 0
  return {
    url: (prefix?: string) => `s3://${bucket}/${prefix ?? `run-${++n}`}`,
    env,
    async close() {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 5000)
        worker.once('message', () => {
          clearTimeout(t)
          resolve()
        })
        worker.postMessage('close')
      })
      await worker.terminate()
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
}

/**
 * The external S3 server CI provides (CKPT_TEST_S3_URL=s3://BUCKET/PREFIX and AWS_* in the
 * environment), or undefined. ensureBucket() creates the bucket when it is missing.
 */
export function externalS3(): { url: string; env: Record<string, string> } | undefined {
  const url = process.env.CKPT_TEST_S3_URL
  if (!url || !process.env.AWS_ACCESS_KEY_ID || !process.env.AWS_SECRET_ACCESS_KEY) return undefined
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) if (k.startsWith('AWS_') && v !== undefined) env[k] = v
  return { url: url.replace(/\/+$/, ''), env }
}

/** CreateBucket for an S3 URL (s3://BUCKET/…); an existing bucket is fine. The client is the store's own (store/remote/s3-store.ts). */
export async function ensureBucket(url: string, env: Record<string, string | undefined>): Promise<void> {
  const bucket = /^s3:\/\/([^/]+)/.exec(url)?.[1]
  if (!bucket) throw new Error(`not s3://BUCKET/PREFIX: ${url}`)
  const { CreateBucketCommand } = await loadS3Sdk()
  const client = await makeS3Client(s3Settings(url, bucket, '', env), {})
  try {
    await client.send(new CreateBucketCommand({ Bucket: bucket }))
  } catch (err) {
    const name = (err as { name?: string }).name
    if (name !== 'BucketAlreadyOwnedByYou' && name !== 'BucketAlreadyExists') throw err
  } finally {
    client.destroy()
  }
}
