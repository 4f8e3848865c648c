"""`segflow run`: the whole pipeline over local files, through the same handlers the cloud runs.

The steps with the local engine (the default) are README.md's ("What `make demo` does"); with `--engine
cloud` the same steps run against a real OSS bucket and the real service, with the `ALIBABA_CLOUD_*` keys
of the environment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segflow_cli.console import Progress, print_table
from segflow_cli.localengine import engine_environment, engine_keys, ensure_port_free, free_port, local_engine
from segflow_cli.logsetup import add_verbose
from segflow_cli.runfiles import collect_inputs, distinct_files, reason_of

CONSOLE_LOG_LEVEL = "WARNING"
DEFAULT_BUCKET = "segflow-local"
FC_ASYNC_ATTEMPTS = 4  # FC's default for async invocations: the first one plus 3 retries
REPO_ROOT = Path(__file__).resolve().parents[2]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", type=Path, help="image and video files (or folders of them)")
    parser.add_argument(
        "--samples",
        action="store_true",
        help="also process sample photos and clips made from scikit-image's bundled photos "
        "(a person, a portrait, two objects, a moving person clip and a green-screen clip), written to "
        "OUT/samples once and kept for later runs",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("segflow-out"),
        help="where the local bucket, previews and logs go (default: ./segflow-out)",
    )
    parser.add_argument(
        "--rule",
        action="append",
        default=[],
        metavar="RULE",
        help='a routing rule, as JSON (\'{"prefix": "incoming/faces/", "action": "SegmentHead"}\') or as '
        "key=value pairs (prefix=incoming/faces/,action=SegmentHead,ReturnForm=mask); the first match "
        "wins, then the defaults (images → SegmentCommonImage, videos → SegmentVideoBody)",
    )
    parser.add_argument(
        "--engine",
        choices=("local", "cloud"),
        default="local",
        help="local: start the local engine (default); cloud: the real service and a real OSS bucket",
    )
    parser.add_argument(
        "--bucket",
        default=None,
        help=f"bucket name (local default: {DEFAULT_BUCKET}; required with --engine cloud)",
    )
    parser.add_argument("--port", type=int, default=0, help="local engine port (default: a free one)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=1200.0,
        help="give up waiting for video jobs after this many seconds (default 1200)",
    )
    parser.add_argument("--no-preview", action="store_true", help="skip contact sheets and frame strips")
    add_verbose(parser, " (and the engine's, in its log)")


@dataclass
class InputFile:
    path: Path
    key: str
    outcome: str = "pending"
    started: float = 0.0
    action: str = ""
    code: str = ""
    reason: str = ""
    seconds: float = 0.0
    manifest_key: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)
    preview: str = ""
    paired_with: str = ""
    """A RefineMask mask: the image its result belongs to (the outcome is that image's)."""
    routed: str = ""
    """The action on_upload answered for this upload: its record says when this version has settled."""


def parse_rule(text: str) -> dict[str, Any]:
    """A `--rule` as JSON or as `key=value,…` (fields other than prefix/suffix/media/action/name/pair/
    pair_timeout are the action's parameters)."""
    text = text.strip()
    rule: dict[str, Any] = {}
    if text.startswith("{"):
        decoded = json.loads(text)
        if not isinstance(decoded, dict):
            raise ValueError(f"--rule must be a JSON object: {text}")
        rule.update(decoded)
        return rule
    params: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"--rule part {part!r} is not key=value")
        name = name.strip()
        if name in ("prefix", "suffix", "media", "action", "name", "pair"):
            rule[name] = value.strip()
        elif name == "pair_timeout":
            rule[name] = float(value)
        else:
            params[name] = value.strip()
    if params:
        rule["params"] = params
    return rule


def put_event(bucket: str, key: str, etag: str, size: int, region: str) -> bytes:
    """The OSS trigger's event for one PutObject, in the format FC delivers (see events/)."""
    from segflow.events import object_created_event

    event = object_created_event(
        bucket,
        key,
        etag=etag,
        size=size,
        region=region,
        event_time=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        request_id=secrets.token_hex(12).upper(),
        rule_id="segflow-run",
    )
    return json.dumps(event).encode("utf-8")


def run(args: argparse.Namespace) -> int:
    import signal

    from segflow.errors import SegflowError

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds, so the engine child is stopped on the way out

    signal.signal(signal.SIGTERM, stop)
    try:
        return _run(args)
    except SegflowError as exc:
        print(f"segflow run: {exc.message} ({exc.code})", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"segflow run: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    out: Path = args.out.resolve()
    rules = [parse_rule(text) for text in args.rule]
    given = collect_inputs(args.inputs)
    if args.samples:
        from segflow_engine.samples import SAMPLE_RULES, write_samples

        sample_dir = out / "samples"
        write_samples(sample_dir)
        given.files.extend(collect_inputs([sample_dir]).files)
        rules += [dict(rule) for rule in SAMPLE_RULES]
    for line in given.unreadable:  # the others still run; the exit status says something was left out
        print(f"segflow run: cannot read {line}", file=sys.stderr)
    inputs = distinct_files(given.files)
    if not inputs:
        raise ValueError("nothing to do: give files or folders, or --samples")
    status = _start(args, out, inputs, rules)
    return 2 if given.unreadable else status


def _start(
    args: argparse.Namespace, out: Path, inputs: list[tuple[Path, str]], rules: list[dict[str, Any]]
) -> int:
    if args.engine == "cloud":
        if not args.bucket:
            raise ValueError("--engine cloud needs --bucket (a bucket in cn-shanghai)")
        return _pipeline(args, out, inputs, rules, env_overrides={}, bucket_dir=None)

    if args.port:
        ensure_port_free(args.port)
    access_key, appcode = engine_keys()
    port = args.port or free_port()
    print(
        f"starting the local engine on 127.0.0.1:{port} (models load once; log in {out}/.engine/engine.log)"
    )
    with local_engine(port, out / ".engine", access_key, appcode, debug=args.verbose) as base_url:
        env = engine_environment(base_url, access_key, appcode)
        os.environ.pop("ALIBABA_CLOUD_SECURITY_TOKEN", None)
        return _pipeline(args, out, inputs, rules, env_overrides=env, bucket_dir=out / "buckets")


def _pipeline(
    args: argparse.Namespace,
    out: Path,
    inputs: list[tuple[Path, str]],
    rules: list[dict[str, Any]],
    *,
    env_overrides: Mapping[str, str],
    bucket_dir: Path | None,
) -> int:
    pipeline = _Pipeline(args.bucket or DEFAULT_BUCKET, rules, env_overrides, bucket_dir)
    files = [InputFile(path, pipeline.settings.input_prefix + key) for path, key in inputs]
    progress = Progress(len(files))
    for item in files:
        pipeline.submit(item, progress)
    pipeline.collect(files, progress, timeout=args.timeout)
    progress.close()
    if not args.no_preview:
        for item in files:
            if item.outcome == "done" and not item.paired_with:  # a mask's preview is its image's
                _make_preview(pipeline.storage, pipeline.settings, item, out / "previews")
    print_table(files, out)
    return 1 if any(item.outcome != "done" for item in files) else 0


class _Pipeline:
    """The two handlers over one bucket, wired as FC would: configuration from the environment (plus our
    overrides), an FC-shaped context per invocation, redelivery of an event while the handler raises."""

    def __init__(
        self,
        bucket: str,
        rules: list[dict[str, Any]],
        env_overrides: Mapping[str, str],
        bucket_dir: Path | None,
    ) -> None:
        from segflow.logs import install_redaction
        from segflow.services.deps import Deps, use_handler_deps
        from segflow.settings import Settings
        from segflow_cli.fccontext import local_context
        from segflow_cli.invoke import find_handler_file, load_handler
        from segflow_cli.localbucket import LocalBuckets

        environ = {**os.environ, **env_overrides}
        input_prefix = environ.setdefault("SEGFLOW_INPUT_PREFIX", "incoming/")
        for rule in rules:  # rule prefixes given relative to the input prefix are made absolute
            if rule.get("prefix") and not str(rule["prefix"]).startswith(input_prefix):
                rule["prefix"] = input_prefix + str(rule["prefix"])
        environ["SEGFLOW_RULES"] = json.dumps(rules)
        self.settings = Settings.from_env(environ)
        install_redaction(self.settings.secret_values)
        self.bucket = bucket
        self.on_upload = load_handler(find_handler_file("on_upload", None), "on_upload")
        self.collect_jobs = load_handler(find_handler_file("collect_jobs", None), "collect_jobs")
        self.context = local_context
        local = LocalBuckets(bucket_dir) if bucket_dir is not None else None
        self.deps = Deps.from_settings(
            self.settings,
            local_context(self.settings, "collect-jobs"),
            storage_factory=local,
            buckets=(bucket,),
        )
        use_handler_deps(self.deps)
        self.storage = self.deps.storage_for(bucket)

    def submit(self, item: InputFile, progress: Progress) -> None:
        """Upload one file and invoke on_upload with its event, redelivered as FC would while it raises."""
        item.started = time.monotonic()
        progress.update(f"uploading and submitting {item.key}")
        try:
            data = item.path.read_bytes()
        except OSError as error:  # checked before the run, then changed (moved, permissions, I/O error)
            item.outcome, item.code, item.reason = "failed", "Unreadable", f"{item.path}: {reason_of(error)}"
            progress.advance()
            return
        etag = self.storage.put_bytes(item.key, data)
        event = put_event(self.bucket, item.key, etag, len(data), self.settings.region)
        for attempt in range(1, FC_ASYNC_ATTEMPTS + 1):
            try:
                answer = json.loads(
                    self.on_upload(event, self.context(self.settings, "on-upload", timeout=600))
                )
                self._note_pairing(item, answer)
                break
            except Exception as exc:  # the handler raises only for what a retry can fix, as FC retries
                code = getattr(exc, "code", type(exc).__name__)
                if attempt == FC_ASYNC_ATTEMPTS:
                    item.outcome, item.code, item.reason = "failed", code, str(exc)
                    break
                progress.update(f"{item.key}: {code}, retrying as FC would (attempt {attempt + 1})")
                time.sleep(2.0**attempt)
        self.read_outcome(item, progress)

    def _image_of(self, item: InputFile, files: list[InputFile]) -> str:
        """The image a waiting RefineMask mask belongs to, if it is among this run's files."""
        from segflow.routing import route

        routed = route(item.key, "image", self.deps.rules)
        if routed is None or routed.pair is None or routed.pair.role != "mask":
            return ""
        for other in files:
            if other is not item and other.key.startswith(routed.pair.image_prefix):
                again = route(other.key, "image", self.deps.rules)
                if again is not None and again.pair is not None and again.pair.role == "image":
                    return other.key
        return ""

    @staticmethod
    def _note_pairing(item: InputFile, answer: dict[str, Any]) -> None:
        """A RefineMask half: the first waits for the other; the second's outcome is its image's."""
        for outcome in answer.get("outcomes", ()):
            item.routed = item.routed or str(outcome.get("action") or "")
            if outcome.get("outcome") == "waiting":
                item.outcome, item.reason = "waiting", str(outcome.get("detail") or "")
            elif outcome.get("action") == "RefineMask" and outcome.get("key") not in (None, item.key):
                item.paired_with = str(outcome["key"])

    def collect(self, files: list[InputFile], progress: Progress, *, timeout: float) -> None:
        """Run collect_jobs until every video job has finished (or `timeout` seconds have passed)."""
        deadline = time.monotonic() + timeout
        payload = json.dumps({"buckets": [self.bucket]})
        event = json.dumps({"triggerTime": "", "triggerName": "segflow-run", "payload": payload}).encode()
        for item in files:  # a half whose other half came later in this run is done by now
            if item.outcome == "waiting":
                item.paired_with = self._image_of(item, files)
                item.outcome = "pending"
                self.read_outcome(item, progress)
                if item.outcome == "pending":
                    item.outcome, item.paired_with = "waiting", ""
        while any(item.outcome == "pending" for item in files) and time.monotonic() < deadline:
            waiting = [item for item in files if item.outcome == "pending"]
            progress.update(f"collecting {len(waiting)} video job(s)")
            self.collect_jobs(event, self.context(self.settings, "collect-jobs", timeout=300))
            for item in waiting:
                self.read_outcome(item, progress)
            if any(item.outcome == "pending" for item in files):
                time.sleep(1.0)
        for item in files:
            if item.outcome == "pending":
                item.outcome, item.code = "failed", "Timeout"
                item.reason = f"the job did not finish within {timeout:.0f} s"

    def read_outcome(self, item: InputFile, progress: Progress) -> None:
        if item.outcome == "waiting":
            return
        key = item.paired_with or item.key
        if item.outcome == "pending" and item.routed and not self._settled(key, item.routed):
            return  # a result or failure record in the bucket may be an earlier version's
        _read_outcome(self.storage, self.deps.layout, item, key)
        if item.outcome != "pending":
            item.seconds = time.monotonic() - item.started
            progress.advance()

    def _settled(self, key: str, action: str) -> bool:
        """Whether the record of `key`'s current version for `action` has ended (done, failed or
        superseded). Until then the run waits: a manifest already under the output prefix may be an
        earlier version's (a file changed since the last run) or an earlier rule's parameters."""
        from segflow.errors import ObjectNotFoundError
        from segflow.states import RecordStates

        try:
            etag = self.storage.head(key).etag
        except ObjectNotFoundError:
            return True
        record = self.deps.records(self.storage).find(self.bucket, key, etag, action)
        return record is None or record.state in RecordStates.FINAL


def _read_outcome(storage: Any, layout: Any, item: InputFile, key: str) -> None:
    """done when a manifest exists under the output prefix for `key` (the file's own, or for a RefineMask
    mask its image's), failed when a failure record does."""
    from segflow.errors import ObjectNotFoundError

    if item.outcome == "failed":
        return
    with contextlib.suppress(ObjectNotFoundError):
        record = json.loads(storage.get_bytes(layout.failure_key(key, storage)))
        item.outcome = "failed"
        item.action = str(record.get("Action") or "")
        item.code = str(record.get("Code") or "")
        item.reason = str(record.get("Message") or "")
        return
    manifests = [
        info.key
        for info in storage.list(f"{layout.output_prefix}{key}/")
        if info.key.endswith("/manifest.json")
    ]
    if manifests:
        item.manifest_key = manifests[0]
        item.manifest = json.loads(storage.get_bytes(item.manifest_key))
        item.outcome = "done"
        item.action = str(item.manifest.get("Action") or "")


def _make_preview(storage: Any, settings: Any, item: InputFile, directory: Path) -> None:
    from segflow_cli.preview import PlacedAlpha, contact_sheet, video_strip

    manifest = item.manifest
    files = manifest.get("Files", [])
    elements = {e.get("Index"): e for e in manifest.get("Elements", [])}
    name = item.key[len(settings.input_prefix) :].replace("/", "__")
    try:
        videos = [f for f in files if f.get("Role") == "video"]
        if videos:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                src = Path(tmp) / "source"
                src.write_bytes(storage.get_bytes(item.key))
                mask = Path(tmp) / "mask"
                mask.write_bytes(storage.get_bytes(videos[0]["Key"]))
                item.preview = str(video_strip(src, mask, directory / f"{name}.png"))
            return
        pieces: list[PlacedAlpha] = []
        for entry in files:
            role = entry.get("Role")
            if role in ("cutout", "mask"):
                pieces.append(PlacedAlpha(storage.get_bytes(entry["Key"])))
            elif role == "element":
                element = elements.get(entry.get("Element"), {})
                pieces.append(
                    PlacedAlpha(
                        storage.get_bytes(entry["Key"]),
                        int(element.get("X") or 0),
                        int(element.get("Y") or 0),
                    )
                )
        if pieces:
            item.preview = str(contact_sheet(storage.get_bytes(item.key), pieces, directory / f"{name}.png"))
    except Exception as exc:  # a preview is a convenience: say why it is missing, keep the result
        item.reason = f"no preview: {exc}"
