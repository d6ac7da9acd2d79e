#!/usr/bin/env bash
# One libFuzzer run of one target, as recorded in RESULTS.md: stable
# toolchain, no sanitizer, under `nice`, the corpus grown in corpus/TARGET
# from the seeds in seeds/TARGET, crashes saved in artifacts/TARGET, the
# whole output in logs/. Usage: fuzz/run.sh TARGET [SECONDS] [libFuzzer flags...]
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: run.sh TARGET [SECONDS] [libFuzzer flags...]}
secs=${2:-600}
shift $(($# < 2 ? $# : 2))

# Longest input: what the parsed thing needs (a line over the chunked
# decoder's 4 KiB limit, a conf.d file, a request head up to 8 KiB).
case $target in
  chunked | config | cache_entry) max_len=16384 ;;
  h1_request_head) max_len=8192 ;;
  *) max_len=4096 ;;
esac
flags=(-max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len="$max_len" -print_final_stats=1)
[ -f "dicts/$target.dict" ] && flags+=(-dict="dicts/$target.dict")

mkdir -p "corpus/$target" logs
log="logs/$target-$(date -u +%Y%m%dT%H%M%SZ).log"
rev=$(git rev-parse --short HEAD)
[ -z "$(git status --porcelain -- ..)" ] || rev="$rev+dirty"
cmd=(nice cargo fuzz run --sanitizer none "$target" "corpus/$target" "seeds/$target" -- "${flags[@]}" "$@")
{
  echo "# date: $(date -u +%FT%TZ)"
  echo "# revision: $rev"
  echo "# command (in fuzz/): ${cmd[*]}"
} >"$log"
status=0
"${cmd[@]}" >>"$log" 2>&1 || status=$?
echo "# exit: $status" >>"$log"
# The summary: start, last status line, final stats, and any crash.
grep -E '^# |INITED|DONE|^stat::|SUMMARY|panicked|deadly|Test unit written|ERROR: libFuzzer' "$log" || true
exit "$status"
