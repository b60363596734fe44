# ckpt — plug-in for ../shared/peers/run-peers.sh (installed into the harness's tools/ by bench/peers/run.sh).
# Full scan through the CLI, one process per phase like every peer: files named ram* are 4 KiB-page
# regions, every other file a 64 KiB-cluster region (the granularity the `ideal` row counts).
# CKPT_CLI is the built CLI (dist/src/cli.js of this checkout); one timeline "series", vtime = index.
tool_check()   { [ -x "$CKPT_CLI" ] && node --version >/dev/null; }
tool_init()    { "$CKPT_CLI" init --store "$REPO"; }
tool_ingest()  {
  local args=() f cs
  for f in $FILES; do
    case $f in ram*) cs=4096 ;; *) cs=65536 ;; esac
    args+=("${f//[^A-Za-z0-9._-]/_}=$1/$f:$cs")
  done
  "$CKPT_CLI" add --store "$REPO" --timeline series --vtime "$3" --label "$2" "${args[@]}"
}
# one process restores every region into $3 (region names are the file names, sanitized: the same here)
tool_restore() { "$CKPT_CLI" restore --store "$REPO" "series@$2" --all --out "$3"; }
tool_verify()  { "$CKPT_CLI" verify --store "$REPO" --deep; }
