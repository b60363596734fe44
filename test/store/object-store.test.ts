/**
 * The object stores of the remotes (store/remote/): remote URLs, and one conformance suite run on
 * memory://, file:// (a temp dir), s3rver (started here on 127.0.0.1, an ephemeral port) and, when CI
 * sets CKPT_TEST_S3_URL with AWS_*, a real S3 server (a Ceph RADOS Gateway). The sync reader of s3://
 * runs the compiled worker in dist/ (npm test builds first).
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openObjectStore, openSyncReader, parseRemoteUrl } from '../../store/remote/object-store.js'
import { ensureBucket, externalS3, startS3rver, type TestS3 } from '../helpers/s3-server.js'
import { caught, removeTmpDirs, tmpDir } from '../helpers/tmp.js'
import { runObjectStoreConformance } from './object-store-conformance.js'

afterAll(() => removeTmpDirs())


describe('remote URLs', () => {
  it('parses s3://BUCKET/PREFIX, file:///DIR and memory://NAME', () => {
    expect(parseRemoteUrl('s3://my-bucket/team/ckpt')).toEqual({ scheme: 's3', bucket: 'my-bucket', prefix: 'team/ckpt' })
    expect(parseRemoteUrl('s3://my-bucket/team/ckpt/')).toEqual({ scheme: 's3', bucket: 'my-bucket', prefix: 'team/ckpt' })
    expect(parseRemoteUrl('s3://my-bucket')).toEqual({ scheme: 's3', bucket: 'my-bucket', prefix: '' })
    expect(parseRemoteUrl('s3://my-bucket/')).toEqual({ scheme: 's3', bucket: 'my-bucket', prefix: '' })
    expect(parseRemoteUrl('file:///srv/ckpt')).toEqual({ scheme: 'file', path: '/srv/ckpt', prefix: '' })
    expect(parseRemoteUrl('file:///srv/with%20space/')).toEqual({ scheme: 'file', path: '/srv/with space', prefix: '' })
    expect(parseRemoteUrl('file://localhost/srv')).toEqual({ scheme: 'file', path: '/srv', prefix: '' })
    expect(parseRemoteUrl('memory://t1')).toEqual({ scheme: 'memory', name: 't1', prefix: '' })
  })

  it.each(['', 'relative/dir', '/abs/dir', 'http://host/x', 'ftp://host/x', 's3://', 's3:///prefix', 's3://a/', 's3://bad_bucket!/p', 's3://b/p//q', 's3://b/../q', 'file://relative/dir', 'file:relative', 'file:/no-authority', 'memory://', 'memory://a/b', 's3://bucket/p?x=1'])(
    '%j is CKPT_BAD_REMOTE',
    async (url) => {
      const err = await caught(() => parseRemoteUrl(url))
      expect(err.code).toBe('CKPT_BAD_REMOTE')
      expect((await caught(() => openObjectStore(url))).code).toBe('CKPT_BAD_REMOTE')
      expect((await caught(() => openSyncReader(url))).code).toBe('CKPT_BAD_REMOTE')
    },
  )

  it('credentials in the URL are refused, and not repeated in the message', async () => {
    const err = await caught(() => parseRemoteUrl('s3://AKIAXYZ:sup3rsecret@bucket/p'))
    expect(err.code).toBe('CKPT_BAD_REMOTE')
    expect(err.message).not.toContain('sup3rsecret')
    expect(JSON.stringify(err.details)).not.toContain('sup3rsecret')
  })

  it('s3:// without credentials is CKPT_REMOTE_AUTH; a bad endpoint is CKPT_BAD_REMOTE', async () => {
    expect((await caught(() => openObjectStore('s3://bucket/p', { env: {} }))).code).toBe('CKPT_REMOTE_AUTH')
    expect((await caught(() => openSyncReader('s3://bucket/p', { env: {} }))).code).toBe('CKPT_REMOTE_AUTH')
    const env = { AWS_ACCESS_KEY_ID: 'k', AWS_SECRET_ACCESS_KEY: 'topsecret', AWS_ENDPOINT_URL_S3: 'ftp://127.0.0.1:9' }
    const err = await caught(() => openObjectStore('s3://bucket/p', { env }))
    expect(err.code).toBe('CKPT_BAD_REMOTE')
    expect(err.message).not.toContain('topsecret')
  })

  it('file:// keys under the store stay inside it', async () => {
    const s = await openObjectStore(`file://${tmpDir()}`)
    for (const key of ['', '/abs', 'a//b', '../up', 'a/../../up', 'a/./b', '.ckpt-tmp/x']) {
      expect((await caught(() => s.put(key, new Uint8Array(1)))).code, key).toBe('CKPT_BAD_ARGUMENT')
    }
  })
})

let memoryN = 0
runObjectStoreConformance('memory://', async () => openObjectStore(`memory://conformance-${process.pid}-${++memoryN}`), {
  conditionalCreate: true,
  syncReader: (s) => openSyncReader(s.url),
  noCredentialCheck: 'no credentials',
})

runObjectStoreConformance('file://', async () => openObjectStore(`file://${tmpDir('ckpt-remote-')}`), {
  conditionalCreate: true,
  syncReader: (s) => openSyncReader(s.url),
  noCredentialCheck: 'no credentials',
})

const dist = fileURLToPath(new URL('../../dist/store/remote/sync-reader-worker.js', import.meta.url))
const built = fs.existsSync(dist)

describe.skipIf(!built)(`s3rver${built ? '' : ' (skipped: no dist/; npm run build first)'}`, () => {
  let s3: TestS3 | undefined
  beforeAll(async () => {
    const t0 = performance.now()
    s3 = await startS3rver()
    console.log(`s3rver started in ${(performance.now() - t0).toFixed(0)} ms`)
  })
  afterAll(async () => {
    await s3?.close()
  })

  runObjectStoreConformance('s3rver', async () => openObjectStore(s3!.url(), { env: s3!.env }), {
    // s3rver ignores If-None-Match: the store finds out and says so
    conditionalCreate: false,
    multipart: true,
    pagedListing: true,
    syncReader: (s) => openSyncReader(s.url, { env: s3!.env }),
    // s3rver checks the access key id, not the signature
    refusedCredentials: () => openObjectStore(s3!.url(), { env: { ...s3!.env, AWS_ACCESS_KEY_ID: 'NOT-A-KEY', AWS_SECRET_ACCESS_KEY: 'wrong-secret' } }),
  })

  describe('s3 failures', () => {
    it('an unreachable endpoint is CKPT_REMOTE_UNAVAILABLE within seconds, for the store and the sync reader', async () => {
      const env = { ...s3!.env, AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:1' }
      const t0 = Date.now()
      const s = await openObjectStore('s3://bucket/p', { env, connectTimeoutMs: 2000 })
      for (const op of [() => s.get('k'), () => s.head('k'), () => s.put('k', new Uint8Array(1)), () => s.put('k', new Uint8Array(1), { ifNoneMatch: true }), () => s.delete('k'), async () => {
        for await (const _ of s.list('')) void _
      }]) {
        const err = await caught(op)
        expect(err.code).toBe('CKPT_REMOTE_UNAVAILABLE')
        expect(err.details).toMatchObject({ url: 's3://bucket/p' })
        expect(err.message).not.toContain(env.AWS_SECRET_ACCESS_KEY)
      }
      expect((await caught(() => s.get('k'))).details).toMatchObject({ url: 's3://bucket/p', key: 'k', op: 'get' })
      await s.close()
      const r = openSyncReader('s3://bucket/p', { env, connectTimeoutMs: 2000 })
      expect((await caught(() => r.read('k', 0, 10))).code).toBe('CKPT_REMOTE_UNAVAILABLE')
      r.close()
      expect(Date.now() - t0).toBeLessThan(20_000)
    })

    it('a server that accepts and never answers is CKPT_REMOTE_UNAVAILABLE after the timeouts (store and sync reader)', async () => {
      const sockets = new Set<net.Socket>()
      const silent = net.createServer((c) => {
        sockets.add(c)
        c.on('error', () => undefined)
      })
      await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r))
      const port = (silent.address() as net.AddressInfo).port
      try {
        const env = { ...s3!.env, AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${port}` }
        const t0 = Date.now()
        const s = await openObjectStore('s3://bucket/p', { env, socketTimeoutMs: 300, maxAttempts: 2 })
        const err = await caught(() => s.get('k'))
        expect(err.code).toBe('CKPT_REMOTE_UNAVAILABLE')
        expect(err.details).toMatchObject({ url: 's3://bucket/p', key: 'k', op: 'get' })
        await s.close()
        const r = openSyncReader('s3://bucket/p', { env, socketTimeoutMs: 60_000, syncTimeoutMs: 500 })
        const err2 = await caught(() => r.read('k', 0, 1))
        expect(err2.code).toBe('CKPT_REMOTE_UNAVAILABLE')
        expect(err2.message).toMatch(/no answer within/)
        r.close()
        expect(Date.now() - t0).toBeLessThan(15_000)
      } finally {
        for (const c of sockets) c.destroy()
        await new Promise((r) => silent.close(r))
      }
    })

    it('a bucket that does not exist is CKPT_BAD_REMOTE', async () => {
      const s = await openObjectStore(`s3://no-such-bucket-${crypto.randomBytes(4).toString('hex')}/p`, { env: s3!.env })
      expect((await caught(() => s.get('k'))).code).toBe('CKPT_BAD_REMOTE')
      expect((await caught(() => s.put('k', new Uint8Array(1)))).code).toBe('CKPT_BAD_REMOTE')
      await s.close()
    })

    it('an empty prefix keys the bucket root, without a leading slash', async () => {
      const root = s3!.url('')
      expect(root).toMatch(/^s3:\/\/[^/]+\/$/)
      const a = await openObjectStore(root, { env: s3!.env })
      const key = `root-test-${crypto.randomBytes(4).toString('hex')}`
      await a.put(key, new Uint8Array([7]))
      const b = await openObjectStore(`${root.replace(/\/$/, '')}`, { env: s3!.env })
      expect(await b.get(key)).toEqual(new Uint8Array([7]))
      expect((await (async () => { const out: string[] = []; for await (const o of a.list(key)) out.push(o.key); return out })())).toEqual([key])
      await a.delete(key)
      await a.close()
      await b.close()
    })
  })
})

const ext = externalS3()
describe.skipIf(!ext || !built)(`external S3 server${ext ? '' : ' (skipped: CKPT_TEST_S3_URL and AWS_* are not set)'}`, () => {
  let n = 0
  const run = crypto.randomBytes(4).toString('hex')
  beforeAll(async () => {
    await ensureBucket(ext!.url, ext!.env)
  })
  const url = () => `${ext!.url}/${run}-${++n}`
  runObjectStoreConformance('external S3', async () => openObjectStore(url(), { env: ext!.env }), {
    conditionalCreate: true,
    multipart: true,
    pagedListing: true,
    syncReader: (s) => openSyncReader(s.url, { env: ext!.env }),
    refusedCredentials: () => openObjectStore(url(), { env: { ...ext!.env, AWS_SECRET_ACCESS_KEY: 'wrong-secret' } }),
  })
})
