"""Shared helpers for Spool's example stage programs (python3 stdlib only).

The `command` executor's contract, in short (see README.md):
  stdin   one JSON object: task_id, stage, attempt, idempotency_key, work_dir, data_dir,
          channel_id, priority, payload (the task's payload), inputs (upstream stages' outputs)
  stdout  the LAST non-empty line is the result, exit code 0 either way:
            {"status": "ok", "output": {...}, "cost": 0.0}
            {"status": "error", "class": "permanent", "message": "...", "retry_after_s": 30}

A stage program is a function job -> (output, cost) handed to main(); it reports failures by
raising StageError with one of the error classes below. main() turns both into the JSON line.
"""

import json
import os
import re
import subprocess
import sys
import traceback
import wave

# Keep stdout for the one result line: anything printed by mistake goes to stderr instead.
_RESULT_OUT = sys.stdout
sys.stdout = sys.stderr

ERROR_CLASSES = ("transient", "network", "rate_limited", "permanent", "timeout")

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"      # Debian: fonts-dejavu-core
FONT_BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"

# Small, single-threaded ffmpeg so several jobs can run side by side on a small machine.
FFMPEG = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
          "-filter_threads", "1", "-filter_complex_threads", "1"]
SIZE = (480, 270)
FPS = 24
SCENE_SECONDS = 2.0
MAX_SCENES = 20


class StageError(Exception):
    """A failure to report to Spool: cls is one of ERROR_CLASSES."""

    def __init__(self, cls, message, retry_after_s=None):
        assert cls in ERROR_CLASSES, cls
        super().__init__(message)
        self.cls = cls
        self.message = message
        self.retry_after_s = retry_after_s


def permanent(message):
    """Bad input: retrying the same job cannot help."""
    return StageError("permanent", message)


# ---------------------------------------------------------------------------------------------
# Result line and the main wrapper

def _emit(obj):
    _RESULT_OUT.write(json.dumps(obj, separators=(",", ":")) + "\n")
    _RESULT_OUT.flush()


def emit_ok(output, cost=0.0):
    _emit({"status": "ok", "output": output, "cost": float(cost)})


def emit_error(cls, message, retry_after_s=None):
    result = {"status": "error", "class": cls, "message": message[-2000:]}
    if retry_after_s is not None:
        result["retry_after_s"] = retry_after_s
    _emit(result)


def main(stage_fn):
    """Read the job, run stage_fn(job) -> (output, cost), print the result line, exit 0."""
    try:
        output, cost = stage_fn(read_input())
        emit_ok(output, cost)
    except StageError as e:
        emit_error(e.cls, e.message, e.retry_after_s)
    except OSError as e:                      # disk full, permissions...: may pass on a retry
        traceback.print_exc()
        emit_error("transient", f"{type(e).__name__}: {e}")
    except Exception as e:                    # a bug in the stage program: retrying won't help
        traceback.print_exc()
        emit_error("permanent", f"internal error: {type(e).__name__}: {e}")
    sys.exit(0)


# ---------------------------------------------------------------------------------------------
# Input

def read_input():
    """Parse the job from stdin, check the envelope, create work_dir. Returns a dict."""
    try:
        job = json.loads(sys.stdin.read())
    except ValueError as e:
        raise permanent(f"stdin is not valid JSON: {e}")
    if not isinstance(job, dict):
        raise permanent("stdin must be a JSON object")
    for key, kind in (("task_id", int), ("stage", str), ("work_dir", str)):
        if not isinstance(job.get(key), kind) or isinstance(job.get(key), bool):
            raise permanent(f"{key} must be {'an integer' if kind is int else 'a string'}")
    if not os.path.isabs(job["work_dir"]):
        raise permanent("work_dir must be an absolute path")
    for key in ("payload", "inputs"):
        job.setdefault(key, {})
        if job[key] is None:
            job[key] = {}
        if not isinstance(job[key], dict):
            raise permanent(f"{key} must be an object")
    os.makedirs(job["work_dir"], exist_ok=True)
    return job


def get_str(obj, key, where, default=None, required=False):
    value = obj.get(key, default)
    if value is None and not required:
        return default
    if not isinstance(value, str) or not value.strip():
        raise permanent(f"{where}.{key} must be a non-empty string")
    return value.strip()


def get_number(obj, key, where, default, lo, hi, integer=False):
    value = obj.get(key, default)
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not lo <= value <= hi:
        kind = "an integer" if integer else "a number"
        raise permanent(f"{where}.{key} must be {kind} from {lo} to {hi}")
    return value


def parse_storyboard(obj, where):
    """Validate a storyboard-shaped object (the task payload, or asset_gen's storyboard).

    {"title": str, "scenes": [{"prompt": str, "narration": str?}, ...]?, "images": int?,
     "scene_seconds": number?}. Without scenes, `images` scenes are derived from the title.
    """
    title = get_str(obj, "title", where, required=True)
    scene_seconds = get_number(obj, "scene_seconds", where, SCENE_SECONDS, 0.5, 10)
    scenes = obj.get("scenes")
    if scenes is None:
        n = get_number(obj, "images", where, 3, 1, MAX_SCENES, integer=True)
        scenes = [{"prompt": f"{title}, scene {i} of {n}",
                   "narration": f"Scene {i} of {n}."} for i in range(1, n + 1)]
    if not isinstance(scenes, list) or not 1 <= len(scenes) <= MAX_SCENES:
        raise permanent(f"{where}.scenes must be a list of 1 to {MAX_SCENES} scenes")
    clean = []
    for i, scene in enumerate(scenes):
        at = f"{where}.scenes[{i}]"
        if not isinstance(scene, dict):
            raise permanent(f"{at} must be an object")
        prompt = get_str(scene, "prompt", at, required=True)
        clean.append({"prompt": prompt, "narration": get_str(scene, "narration", at, prompt)})
    return {"title": title, "scenes": clean, "scene_seconds": scene_seconds}


def storyboard(job):
    """The storyboard asset_gen produced if this stage has it as input, else the payload's."""
    asset_gen = job["inputs"].get("asset_gen")
    if isinstance(asset_gen, dict) and "storyboard" in asset_gen:
        if not isinstance(asset_gen["storyboard"], dict):
            raise permanent("inputs.asset_gen.storyboard must be an object")
        return parse_storyboard(asset_gen["storyboard"], "inputs.asset_gen.storyboard")
    return parse_storyboard(job["payload"], "payload")


def input_file(job, stage, key, required=True):
    """Absolute path of a file an upstream stage produced: inputs[stage][key].

    Returns None if the stage's output is absent and required is False (e.g. a skipped
    optional stage). A listed file that is missing is a permanent error.
    """
    if job["inputs"].get(stage) is None and not required:
        return None
    return existing_file(upstream(job, stage).get(key), f"inputs.{stage}.{key}")


def upstream(job, stage):
    """The output object of upstream stage `stage` (permanent error if absent)."""
    out = job["inputs"].get(stage)
    if not isinstance(out, dict):
        raise permanent(f"inputs.{stage} is missing (the output of stage {stage})")
    return out


def existing_file(path, where):
    if not isinstance(path, str) or not os.path.isabs(path):
        raise permanent(f"{where} must be an absolute file path")
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise permanent(f"{where}: file not found or empty: {path}")
    return path


# ---------------------------------------------------------------------------------------------
# Tools and files

def run(cmd, cwd=None):
    """Run a tool with stdout/stderr captured (never on our stdout). Returns its stdout.

    A non-zero exit is a transient error carrying the last lines of its stderr; a tool that
    is not installed is permanent (this worker cannot run the stage). No timeout here: Spool
    kills the stage's whole process group (tools included) when the job runs too long.
    """
    try:
        proc = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, errors="replace")
    except FileNotFoundError:
        raise permanent(f"{cmd[0]} is not installed on this worker")
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:]) or "(no stderr)"
        raise StageError("transient", f"{cmd[0]} exited with {proc.returncode}: {tail}")
    return proc.stdout


def tmp_path(path):
    """Where to write `path` first: same directory and extension (ffmpeg picks the format
    from it). Publish with os.replace(tmp, path) so a retry never sees a half-written file."""
    root, ext = os.path.splitext(path)
    return f"{root}.tmp{ext}"


def media_duration(path):
    """Duration in seconds: from the WAV header for .wav, else ffprobe."""
    if path.endswith(".wav"):
        try:
            with wave.open(path) as w:
                return round(w.getnframes() / w.getframerate(), 3)
        except (wave.Error, EOFError):
            pass                                  # e.g. a float WAV: ask ffprobe
    out = run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
               "-of", "default=noprint_wrappers=1:nokey=1", path])
    try:
        return round(float(out.strip()), 3)
    except ValueError:
        raise StageError("transient", f"ffprobe could not read the duration of {path}")


def font_option(bold=False):
    """drawtext font option: DejaVu if installed, else ffmpeg's fontconfig default."""
    path = FONT_BOLD if bold else FONT
    if os.path.isfile(path) and re.fullmatch(r"[\w./-]+", path):
        return f"fontfile={path}"
    return "font=Sans"
