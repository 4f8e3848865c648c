"""Checking a probed file against an action's documented limits, and the size that would fit them.

A violated limit raises `LimitViolationError` carrying the code the service itself would return
(`shared/VISION-API.md` §7) and a message naming the limit and the measured value. What a header does not
state is not checked (an FLV without onMetaData, a TS/PS of another codec, a fragmented MP4's or a
Matroska file's frame count): the service decides those.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import isqrt

from segflow.catalogue import PNG_ACCEPTED_BPP, Action, Limits, get_action
from segflow.errors import InputValidationError, SegflowError, UnknownActionError
from segflow.media import MediaError, MediaInfo, ReadAt, probe_media
from segflow.routing import Rule, route
from segflow.values import Value

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".flv", ".mkv", ".ts", ".mpg", ".mpeg", ".m4v")
"""How the media of a file no probe could read is guessed, to route it (its bytes said nothing)."""

# Kinds of violation, in the order they are checked and reported.
FORMAT = "format"
EMPTY = "empty"
CORRUPT = "corrupt"
BYTES = "bytes"
PNG_DEPTH = "png_depth"
RESOLUTION = "resolution"
FRAMES = "frames"


class Violation(Value):
    """One broken limit: its kind, the service's code and a sentence naming the limit and the value."""

    kind: str
    code: str
    message: str


class LimitViolationError(InputValidationError):
    """An input breaks one or more documented limits; `violations` lists them, the first gives the code."""

    def __init__(self, violations: tuple[Violation, ...], *, http_status: int | None = None) -> None:
        first = violations[0]
        super().__init__("; ".join(v.message for v in violations), code=first.code, http_status=http_status)
        self.violations = violations
        self.kind = first.kind

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(v.kind for v in self.violations)


def validate_object(action: Action, read_at: ReadAt, size: int) -> MediaInfo:
    """Probe an object through `read_at` and check it against the action's limits; returns what was read.

    The byte limit is checked before anything is read, so an oversized object costs no read at all.
    """
    if action.media not in ("image", "video"):
        raise InputValidationError(f"{action.name} takes no media file", code="InvalidParameter")
    early = _bytes_violation(action, size)
    if early is not None:
        _raise(action, (early,))
    try:
        info = probe_media(read_at, size)
    except MediaError as exc:
        raise media_error_for_action(action, exc) from exc
    validate_against_limits(action, info, size)
    return info


def media_error_for_action(action: Action, error: MediaError) -> LimitViolationError:
    """The error `action`'s service would give for a file `probe_media` could not read.

    `probe_media` does not know the action, so its codes are generic; once the action is known
    (after routing), this gives the product's own code: imageseg `InvalidImage.Content`,
    videoseg `InvalidFile.Type` / `InvalidFile.Decode` / `InvalidFile.Content`, PicWish's state -7.
    """
    codes = action.codes
    kind = error.problem if error.problem in (FORMAT, EMPTY) else CORRUPT
    code = codes.for_problem(kind)
    violation = Violation(kind, code, f"{action.name}: {error.message}")
    return LimitViolationError((violation,), http_status=codes.http_status)


def unreadable_failure(key: str, error: MediaError, rules: Sequence[Rule]) -> tuple[str | None, SegflowError]:
    """The action a file `probe_media` could not read goes to (media from the probe, else the key's
    extension) and the error that action's service gives for it: what on_upload records, and what a
    dry run predicts."""
    media = error.media or ("video" if key.lower().endswith(VIDEO_EXTENSIONS) else "image")
    chosen = route(key, media, rules)
    if chosen is None:
        return None, error
    try:
        return chosen.action, media_error_for_action(get_action(chosen.action), error)
    except UnknownActionError:
        return chosen.action, error


def media_mismatch(action: Action, key: str, info: MediaInfo) -> InputValidationError | None:
    """The error of an action given the other kind of media (a video routed to an image action), if so."""
    if action.media == info.media:
        return None
    return InputValidationError(
        f"{action.name} takes {action.media} files; {key} is a {info.format} {info.media}",
        code=action.codes.format,
        http_status=action.codes.http_status,
    )


def validate_against_limits(action: Action, info: MediaInfo, size: int) -> None:
    """Raise `LimitViolationError` when `info` (of a file of `size` bytes) breaks a limit of `action`."""
    violations = limit_violations(action, info, size)
    if violations:
        _raise(action, violations)


def limit_violations(action: Action, info: MediaInfo, size: int) -> tuple[Violation, ...]:
    """Every limit of `action` that `info` breaks, in checking order (format first)."""
    limits, codes, name = action.limits, action.codes, action.name
    noun = "video" if info.media == "video" else "image"
    if limits.formats and info.format not in limits.formats:
        accepted = ", ".join(sorted(limits.formats))
        return (Violation(FORMAT, codes.format, f"{name} accepts {accepted}; this file is {info.format}"),)
    found: list[Violation] = []
    over = _bytes_violation(action, size)
    if over is not None:
        found.append(over)
    if limits.refuse_png_bpp and info.format == "PNG" and info.bits_per_pixel not in PNG_ACCEPTED_BPP:
        found.append(
            Violation(
                PNG_DEPTH,
                codes.png_depth,
                f"{name} needs a 24-bit RGB or 32-bit RGBA PNG (no 8/16/64-bit PNG); this PNG has "
                f"{info.bits_per_pixel} bits per pixel (colour type {info.png_color_type}, "
                f"bit depth {info.bit_depth})",
            )
        )
    if info.width is not None and info.height is not None:
        found.extend(
            Violation(RESOLUTION, codes.resolution, message)
            for message in resolution_problems(name, limits, info.width, info.height, noun)
        )
    if limits.max_frames is not None and info.frames is not None and info.frames > limits.max_frames:
        found.append(
            Violation(
                FRAMES,
                codes.frames,
                f"{name} needs at most {limits.max_frames} frames; this video has {info.frames}",
            )
        )
    return tuple(found)


def resolution_problems(name: str, limits: Limits, width: int, height: int, noun: str = "image") -> list[str]:
    """A sentence for each resolution rule of `limits` that width×height breaks."""
    dims = f"this {noun} is {width}×{height}"
    out: list[str] = []
    if limits.min_width is not None or limits.min_height is not None:
        op = ">" if limits.min_exclusive else "≥"
        bad = any(
            bound is not None and (value <= bound if limits.min_exclusive else value < bound)
            for value, bound in ((width, limits.min_width), (height, limits.min_height))
        )
        if bad:
            out.append(f"{name} needs {_sides(op, limits.min_width, limits.min_height)}; {dims}")
    if limits.max_width is not None or limits.max_height is not None:
        op = "<" if limits.max_exclusive else "≤"
        bad = any(
            bound is not None and (value >= bound if limits.max_exclusive else value > bound)
            for value, bound in ((width, limits.max_width), (height, limits.max_height))
        )
        if bad:
            out.append(f"{name} needs {_sides(op, limits.max_width, limits.max_height)}; {dims}")
    short, long = min(width, height), max(width, height)
    if limits.max_short_side is not None and short > limits.max_short_side:
        out.append(f"{name} needs the short side ≤ {limits.max_short_side} px; {dims}")
    if limits.min_long_side is not None and long < limits.min_long_side:
        out.append(f"{name} needs the long side ≥ {limits.min_long_side} px; {dims}")
    if limits.max_long_side is not None and long > limits.max_long_side:
        out.append(f"{name} needs the long side ≤ {limits.max_long_side} px; {dims}")
    if limits.max_pixels is not None:
        pixels = width * height
        if pixels > limits.max_pixels or (limits.max_pixels_exclusive and pixels == limits.max_pixels):
            op = "<" if limits.max_pixels_exclusive else "≤"
            out.append(
                f"{name} needs width × height {op} {limits.max_pixels:,} pixels; {dims} ({pixels:,} pixels)"
            )
    # Ratios are compared exactly, as integer cross products (no float rounding at the bounds).
    if limits.max_long_to_short is not None and _above((long, short), limits.max_long_to_short):
        out.append(
            f"{name} needs long side / short side ≤ {_num(*limits.max_long_to_short)}; "
            f"{dims} (ratio {long / short:.2f})"
        )
    low, high = limits.min_aspect, limits.max_aspect
    if (low is not None and _above(low, (width, height))) or (
        high is not None and _above((width, height), high)
    ):
        bounds = f"{_num(*low) if low is not None else '0'} and {_num(*high) if high is not None else '∞'}"
        out.append(f"{name} needs width / height between {bounds}; {dims} (ratio {width / height:.2f})")
    return out


def _above(ratio: tuple[int, int], other: tuple[int, int]) -> bool:
    """ratio > other, for (numerator, positive denominator) pairs, exactly."""
    return ratio[0] * other[1] > other[0] * ratio[1]


def fit_size(action: Action, width: int, height: int) -> tuple[int, int] | None:
    """The largest size with the same aspect that meets the action's resolution limits.

    None when width×height already meets them. Only shrinking is offered (the oversize `fit` policy):
    an image too small, or with an aspect ratio the action refuses, raises `LimitViolationError` with the
    resolution code because no scaled copy would pass.
    """
    limits = action.limits
    problems = resolution_problems(action.name, limits, width, height)
    if not problems:
        return None
    long, short = max(width, height), min(width, height)
    target_long = _largest_long_side(limits, width, height)
    if target_long is not None and target_long < long:
        # start a little above the exact bound: rounding the short side may still leave room
        top = min(target_long + 2, long)
        for candidate in range(top, max(0, top - 64), -1):
            other = max(1, (short * candidate + long // 2) // long)
            size = (candidate, other) if width >= height else (other, candidate)
            if not resolution_problems(action.name, limits, *size):
                return size
    violations = tuple(Violation(RESOLUTION, action.codes.resolution, p) for p in problems)
    raise LimitViolationError(
        (*violations[:-1], _no_fit(action, violations[-1])), http_status=action.codes.http_status
    )


def _no_fit(action: Action, last: Violation) -> Violation:
    return Violation(last.kind, last.code, f"{last.message} (no scaled copy can meet {action.name}'s limits)")


def _largest_long_side(limits: Limits, width: int, height: int) -> int | None:
    """The long side after the largest downscale the upper bounds allow (None: no upper bound)."""
    long, short = max(width, height), min(width, height)
    sub = 1 if limits.max_exclusive else 0
    scales: list[tuple[int, int]] = []  # (numerator, denominator) of each bound's largest scale
    if limits.max_width is not None:
        scales.append((limits.max_width - sub, width))
    if limits.max_height is not None:
        scales.append((limits.max_height - sub, height))
    if limits.max_short_side is not None:
        scales.append((limits.max_short_side, short))
    if limits.max_long_side is not None:
        scales.append((limits.max_long_side, long))
    if limits.max_pixels is not None:
        allowed = limits.max_pixels - (1 if limits.max_pixels_exclusive else 0)
        # s = sqrt(allowed / (w*h)); floor the long side from it exactly enough, the search loop corrects
        scales.append((_isqrt_ratio(allowed * long * long, width * height), long))
    if not scales:
        return None
    numerator, denominator = scales[0]
    for candidate in scales[1:]:
        if _above((numerator, denominator), candidate):
            numerator, denominator = candidate
    return max(1, long * numerator // denominator)


def _isqrt_ratio(numerator: int, denominator: int) -> int:
    """floor(sqrt(numerator / denominator)) for positive integers."""
    return isqrt(numerator // denominator)


def _bytes_violation(action: Action, size: int) -> Violation | None:
    limits = action.limits
    if limits.max_bytes is None:
        return None
    if size > limits.max_bytes or (limits.max_bytes_exclusive and size == limits.max_bytes):
        op = "<" if limits.max_bytes_exclusive else "≤"
        return Violation(
            BYTES,
            action.codes.too_large,
            f"{action.name} needs a file {op} {_human(limits.max_bytes)} ({limits.max_bytes:,} bytes); "
            f"this file has {size:,} bytes",
        )
    return None


def _raise(action: Action, violations: tuple[Violation, ...]) -> None:
    codes = action.codes
    status = codes.too_large_http_status if violations[0].kind == BYTES else codes.http_status
    raise LimitViolationError(violations, http_status=status)


def _sides(op: str, w: int | None, h: int | None) -> str:
    if w == h:
        return f"width and height {op} {w} px"
    parts = [f"{side} {op} {v} px" for side, v in (("width", w), ("height", h)) if v is not None]
    return " and ".join(parts)


def _num(numerator: int, denominator: int) -> str:
    """A ratio as people write it: `16`, `0.5`."""
    if numerator % denominator == 0:
        return str(numerator // denominator)
    return f"{numerator / denominator:g}"


def _human(n: int) -> str:
    for unit, factor in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} bytes"
