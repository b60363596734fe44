#!/usr/bin/env node
// The shape the code keeps (issue 11): no function over 100 lines and no source file over 700 lines
// outside tests, src/ reaching store/ only through store/index.ts (worker threads: store/worker-index.ts), no import circle. Prints every
// breach; exits 1 if there is one. Usage: node scripts/code-shape.mjs [--max-fn 100] [--max-file 700]
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const arg = (name, dflt) => {
  const i = process.argv.indexOf(name)
  return i > 0 ? Number(process.argv[i + 1]) : dflt
}
const MAX_FN = arg('--max-fn', 100)
const MAX_FILE = arg('--max-file', 700)
const dirs = ['codecs', 'store', 'src', 'bench']
const files = []
const walk = (d) => {
  for (const e of fs.readdirSync(d, { withFileTypes: true })) {
    const p = path.join(d, e.name)
    if (e.isDirectory()) walk(p)
    else if (p.endsWith('.ts') && !p.endsWith('.d.ts')) files.push(p)
  }
}
for (const d of dirs) walk(path.join(root, d))
const breaches = []
const imports = new Map()
for (const file of files) {
  const rel = path.relative(root, file)
  const text = fs.readFileSync(file, 'utf8')
  const lines = text.split('\n').length
  if (lines > MAX_FILE) breaches.push(`file ${rel}: ${lines} lines (at most ${MAX_FILE})`)
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.ES2022, true)
  const deps = []
  const visit = (node) => {
    if (ts.isFunctionDeclaration(node) || ts.isMethodDeclaration(node) || ts.isArrowFunction(node) || ts.isFunctionExpression(node) || ts.isConstructorDeclaration(node) || ts.isGetAccessor(node)) {
      if (node.body) {
        const a = sf.getLineAndCharacterOfPosition(node.getStart(sf)).line
        const b = sf.getLineAndCharacterOfPosition(node.end).line
        if (b - a + 1 > MAX_FN) {
          const name = node.name && ts.isIdentifier(node.name) ? node.name.text : ts.isArrowFunction(node) || ts.isFunctionExpression(node) ? '(anonymous)' : '?'
          breaches.push(`function ${rel}:${a + 1} ${name}: ${b - a + 1} lines (at most ${MAX_FN})`)
        }
      }
    }
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      const spec = node.moduleSpecifier.text
      const typeOnly = ts.isImportDeclaration(node) ? node.importClause?.isTypeOnly === true : node.isTypeOnly
      if (spec.startsWith('.')) deps.push({ spec, typeOnly })
    }
    if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const a = node.arguments[0]
      if (a && ts.isStringLiteral(a) && a.text.startsWith('.') && !rel.startsWith('bench') && !rel.startsWith(path.join('src', 'cli'))) breaches.push(`dynamic import ${rel}: import('${a.text}')`)
    }
    ts.forEachChild(node, visit)
  }
  visit(sf)
  const resolved = []
  for (const d of deps) {
    const target = path.relative(root, path.resolve(path.dirname(file), d.spec.replace(/\.js$/, '.ts')))
    if (rel.startsWith('src' + path.sep) && target.startsWith('store' + path.sep) && target !== path.join('store', 'index.ts') && target !== path.join('store', 'worker-index.ts')) breaches.push(`deep import ${rel}: ${d.spec} (src/ reaches store/ through store/index.ts, or store/worker-index.ts for worker threads)`)
    for (const [from, layer] of [['codecs', ['store', 'src', 'bench']], ['store', ['src', 'bench']]]) {
      if (rel.startsWith(from + path.sep) && layer.some((l) => target.startsWith(l + path.sep))) breaches.push(`upward import ${rel}: ${d.spec}`)
    }
    if (!d.typeOnly) resolved.push(target)
  }
  imports.set(rel, resolved)
}
// import circles (runtime imports only)
const state = new Map()
const stack = []
const circles = new Set()
const dfs = (f) => {
  state.set(f, 1)
  stack.push(f)
  for (const t of imports.get(f) ?? []) {
    if (!imports.has(t)) continue
    if (state.get(t) === 1) circles.add(stack.slice(stack.indexOf(t)).concat(t).join(' -> '))
    else if (!state.has(t)) dfs(t)
  }
  stack.pop()
  state.set(f, 2)
}
for (const f of imports.keys()) if (!state.has(f)) dfs(f)
for (const c of circles) breaches.push(`import circle: ${c}`)
for (const b of breaches) console.log(b)
console.log(breaches.length ? `${breaches.length} breaches` : 'the code keeps its shape')
process.exit(breaches.length ? 1 : 0)
