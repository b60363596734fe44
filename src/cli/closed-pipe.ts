/** A closed pipe (`ckpt log | head -1`) is not an error of ours: the process ends with its status so far. */
export function exitOnClosedPipe(): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0)
    throw err
  })
}
