/** `ckpt remote`: name remotes of a store (names and URLs; credentials come from the environment). */
import { COMMON, parse, storeDir } from '../args.js'
import { UsageError } from '../errors.js'
import { json, JSON_HELP, line, READ, STORE_HELP, withStore, type Command } from '../shared.js'

const OPTIONS = { ...COMMON } as const

export const remote: Command = {
  summary: 'name remotes (S3 buckets, directories) to push to and pull from',
  help: `usage: ckpt remote --store DIR add NAME URL
       ckpt remote --store DIR remove NAME
       ckpt remote --store DIR [list] [--json]

A remote is s3://BUCKET/PREFIX (AWS S3, Ceph RADOS Gateway, MinIO, ...) or file:///ABSOLUTE/DIR.
Names and URLs are kept in DIR/remotes.json; credentials and endpoint never are: they come from the
standard AWS environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION,
AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL; path-style addressing when an endpoint is set). Wherever a
REMOTE is asked for, a URL works too. list --json: [{name, url}].

${STORE_HELP}
${JSON_HELP}

examples:
  ckpt remote --store s add team s3://recordings/ckpt
  AWS_ENDPOINT_URL_S3=http://127.0.0.1:7480 ckpt push --store s team`,
  options: OPTIONS,
  json: 'document',
  async run(argv) {
    const { values, positionals } = parse('remote', argv, OPTIONS)
    const dir = storeDir(values.store, 'remote')
    const { addRemote, listRemotes, removeRemote } = await import('../../remote.js')
    const [verb = 'list', ...rest] = positionals
    // a store that is not there (or not a store) is said as such, exit 3, as by every other command
    await withStore(dir, READ, async () => {})
    if (verb === 'add') {
      if (rest.length !== 2) throw new UsageError('remote add takes NAME URL', 'remote')
      const r = addRemote(dir, rest[0]!, rest[1]!)
      if (values.json) json(r)
      else line(`${r.name} ${r.url}`)
      return
    }
    if (verb === 'remove') {
      if (rest.length !== 1) throw new UsageError('remote remove takes NAME', 'remote')
      removeRemote(dir, rest[0]!)
      if (values.json) json({ removed: rest[0] })
      else line(`removed remote ${rest[0]}`)
      return
    }
    if (verb !== 'list' || rest.length) throw new UsageError(`unknown remote subcommand ${verb} (add, remove, list)`, 'remote')
    const all = listRemotes(dir)
    if (values.json) json(all)
    else for (const r of all) line(`${r.name} ${r.url}`)
  },
}
