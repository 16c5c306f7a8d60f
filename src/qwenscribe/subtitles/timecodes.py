"""Timestamps as each format writes them, from whole centiseconds (see timing.py)."""

from __future__ import annotations

from qwenscribe.subtitles.timing import to_ticks


def _parts(seconds: float) -> tuple[int, int, int, int]:
    """Hours, minutes, seconds and centiseconds of a cue time (never negative)."""
    ticks = max(0, to_ticks(seconds))
    whole, centis = divmod(ticks, 100)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    return hours, minutes, secs, centis


def srt_time(seconds: float) -> str:
    """00:01:02,340"""
    hours, minutes, secs, centis = _parts(seconds)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{centis * 10:03d}"


def vtt_time(seconds: float) -> str:
    """00:01:02.340"""
    hours, minutes, secs, centis = _parts(seconds)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{centis * 10:03d}"


def ass_time(seconds: float) -> str:
    """0:01:02.34"""
    hours, minutes, secs, centis = _parts(seconds)
    return f"{hours:d}:{minutes:02d}:{secs:02d}.{centis:02d}"


def lrc_time(seconds: float) -> str:
    """01:02.34; minutes keep counting past an hour (62:00.00), as LRC has no hours."""
    hours, minutes, secs, centis = _parts(seconds)
    return f"{hours * 60 + minutes:02d}:{secs:02d}.{centis:02d}"


def word_ticks(cue_start: float, cue_end: float, starts: list[float]) -> list[int]:
    """Where each word of a cue starts, in ticks: in order and inside the cue, so the durations
    between them (karaoke) are never negative and add up to the cue's length."""
    low, high = to_ticks(cue_start), to_ticks(cue_end)
    ticks: list[int] = []
    for start in starts:
        low = min(max(to_ticks(start), low), high)
        ticks.append(low)
    return ticks
