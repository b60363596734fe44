#!/usr/bin/env node
// The CLI synopsis README.md shows: the built CLI's `ckpt --help` (every command, its usage lines, what
// they share). Prints it; with --write replaces the block between the lines `<!-- cli-synopsis -->`
// and `<!-- /cli-synopsis -->` of README.md with it (in a ```text fence); with --check exits 1 when
// README.md's block differs. Needs the build (npm run build): it runs dist/cli/ckpt.js.
// Usage: node scripts/cli-synopsis.mjs [--write | --check]
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const cli = path.join(root, 'dist/cli/ckpt.js')
const readme = path.join(root, 'README.md')
const OPEN = '<!-- cli-synopsis -->'
const CLOSE = '<!-- /cli-synopsis -->'

/** `ckpt --help` of the built CLI, ending in one newline. */
export function synopsis() {
  if (!fs.existsSync(cli)) throw new Error(`${cli} is missing: run npm run build first`)
  const r = spawnSync(process.execPath, [cli, '--help'], { encoding: 'utf8' })
  if (r.error) throw r.error
  if (r.status !== 0) throw new Error(`ckpt --help exited ${r.status}: ${r.stderr}`)
  return r.stdout.endsWith('\n') ? r.stdout : r.stdout + '\n'
}

/** The block between the markers (the lines strictly between them), or undefined without markers. */
export function readmeBlock(text) {
  const lines = text.split('\n')
  const a = lines.indexOf(OPEN)
  const b = lines.indexOf(CLOSE)
  if (a < 0 || b < 0 || b < a) return undefined
  return { start: a + 1, end: b, text: lines.slice(a + 1, b).join('\n') + '\n' }
}

/** What the block holds: the synopsis in a text fence. */
export function fenced(s) {
  return '```text\n' + s + '```\n'
}

function main(argv) {
  const s = synopsis()
  if (argv.includes('--write') || argv.includes('--check')) {
    const text = fs.readFileSync(readme, 'utf8')
    const block = readmeBlock(text)
    if (!block) {
      process.stderr.write(`cli-synopsis: README.md has no ${OPEN} ... ${CLOSE} block\n`)
      return 1
    }
    if (argv.includes('--check')) {
      if (block.text === fenced(s)) return 0
      process.stderr.write('cli-synopsis: README.md\'s CLI synopsis differs from ckpt --help (node scripts/cli-synopsis.mjs --write)\n')
      return 1
    }
    const lines = text.split('\n')
    const next = [...lines.slice(0, block.start), ...fenced(s).slice(0, -1).split('\n'), ...lines.slice(block.end)].join('\n')
    if (next !== text) fs.writeFileSync(readme, next)
    return 0
  }
  process.stdout.write(s)
  return 0
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) process.exitCode = main(process.argv.slice(2))
