#!/usr/bin/env bash
# Self-test of the example stage programs, without Spool: runs the five stages in DAG order
# on a sample task (asset_gen; video_gen, narration, sfx; assembly), feeding each stage the
# outputs of its upstream stages, then checks the final MP4 with ffprobe and that bad input
# gets a permanent error. Exits non-zero on any failure.
#
#   examples/stages/selftest.sh            # KEEP=1 to keep the temp dir and look at the video
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
if [[ "${KEEP:-}" == 1 ]]; then echo "keeping $tmp"; else trap 'rm -rf "$tmp"' EXIT; fi
data="$tmp/data"
task=42

payload='{"title": "Three hearts: the octopus",
  "scenes": [
    {"prompt": "An octopus gliding over a coral reef at dawn", "narration": "Meet the octopus."},
    {"prompt": "Diagram of two gill hearts and one systemic heart", "narration": "It has three hearts."},
    {"prompt": "The octopus hides in a shell, 100% camouflaged: \"gone\"", "narration": "And blue blood."}
  ]}'

fail() { echo "selftest: FAIL: $*" >&2; exit 1; }
since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }'; }

# job STAGE INPUTS_JSON [PAYLOAD_JSON [ATTEMPT]]: the JSON Spool would write to the program.
job() {
  python3 -c '
import json, sys
task, stage, data, inputs, payload, attempt = sys.argv[1:]
print(json.dumps({"task_id": int(task), "stage": stage, "attempt": int(attempt),
                  "idempotency_key": f"{task}:{stage}:{attempt}",
                  "work_dir": f"{data}/tasks/{task}/{stage}", "data_dir": data,
                  "channel_id": "selftest", "priority": "normal",
                  "payload": json.loads(payload), "inputs": json.loads(inputs)}))
' "$task" "$1" "$data" "$2" "${3:-$payload}" "${4:-1}"
}

# result STAGE INPUTS_JSON [PAYLOAD_JSON [ATTEMPT]]: runs the stage, prints its result line.
# The program must print exactly one non-empty line to stdout and exit 0.
result() {
  local out rc=0
  out=$(job "$@" | "$here/$1" 2>"$tmp/$1.stderr") || rc=$?
  [[ $rc == 0 ]] || fail "$1 exited with $rc: $(tail -n 5 "$tmp/$1.stderr")"
  [[ $(grep -c . <<<"$out") == 1 ]] || fail "$1 printed more than one line to stdout: $out"
  printf '%s\n' "$out"
}

# stage STAGE INPUTS_JSON: runs the stage, expects status ok, saves its output to $tmp/STAGE.json.
stage() {
  local start line
  start=$(date +%s.%N)
  line=$(result "$@")
  python3 -c '
import json, sys
r = json.loads(sys.argv[1])
if r.get("status") != "ok":
    sys.exit(f"{sys.argv[2]}: {r}")
json.dump(r["output"], open(sys.argv[3], "w"))
' "$line" "$1" "$tmp/$1.json" || fail "$1 did not succeed"
  printf 'selftest: %-9s ok  %5.2fs  %s\n' "$1" "$(since "$start")" "$(cut -c1-100 "$tmp/$1.json")"
}

# expect_error STAGE INPUTS_JSON PAYLOAD_JSON CLASS TEXT: the result is that error class and
# its message contains TEXT.
expect_error() {
  local line
  line=$(result "$1" "$2" "$3")
  python3 -c '
import json, sys
r = json.loads(sys.argv[1]); cls, text = sys.argv[2:]
if r.get("status") != "error" or r.get("class") != cls or text not in r.get("message", ""):
    sys.exit(f"want a {cls} error naming {text!r}, got {r}")
' "$line" "$4" "$5" || fail "$1 with bad input"
  echo "selftest: $1 bad input -> $4 error ok"
}

t0=$(date +%s.%N)
stage asset_gen '{}'
ag="{\"asset_gen\": $(cat "$tmp/asset_gen.json")}"
stage video_gen "$ag"
stage narration "$ag"
stage sfx "$ag"
stage assembly "{\"video_gen\": $(cat "$tmp/video_gen.json"),
  \"narration\": $(cat "$tmp/narration.json"), \"sfx\": $(cat "$tmp/sfx.json")}"
echo "selftest: all five stages took $(since "$t0")s"

# The final video: H.264 + AAC, duration > 0, and where assembly said it is.
video=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["video_url"])' \
  "$tmp/assembly.json")
[[ "$video" == "$data/tasks/$task/assembly/$task.mp4" && -s "$video" ]] || fail "no video at $video"
streams=$(ffprobe -v error -show_entries stream=codec_type,codec_name -of csv=p=0 "$video" | sort | tr '\n' ' ')
[[ "$streams" == "aac,audio h264,video " ]] || fail "unexpected streams: $streams"
duration=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$video")
python3 -c 'import sys; sys.exit(float(sys.argv[1]) <= 0)' "$duration" || fail "duration $duration"
echo "selftest: $video: $streams${duration}s"

# A retry (attempt 2) of a finished stage works and overwrites its output.
stage assembly "{\"video_gen\": $(cat "$tmp/video_gen.json"),
  \"narration\": $(cat "$tmp/narration.json"), \"sfx\": $(cat "$tmp/sfx.json")}" "$payload" 2
if compgen -G "$data/tasks/$task/*/*.tmp.*" >/dev/null; then fail "a stage left a temp file"; fi

# Bad input gets a permanent error naming the problem.
expect_error asset_gen '{}' '{"title": "t", "scenes": "not a list"}' permanent "payload.scenes"
expect_error asset_gen '{}' '{"title": "t", "scenes": [{"prompt": "a"}, {"prompt": 7}]}' \
  permanent "payload.scenes[1].prompt"
expect_error asset_gen '{}' '{"scenes": [{"prompt": "a"}]}' permanent "payload.title"
expect_error video_gen '{"asset_gen": {"frames": ["/nonexistent/frame_01.png"]}}' "$payload" \
  permanent "inputs.asset_gen.frames[0]"
expect_error assembly '{}' "$payload" permanent "inputs.video_gen"
echo "selftest: PASS"
