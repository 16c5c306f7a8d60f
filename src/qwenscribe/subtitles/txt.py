"""Plain text (.txt): one paragraph per segment, each on its own line.

Segments are the stretches of speech between the silences the audio was cut in, so they make
natural paragraphs, and a line per paragraph keeps the file easy to grep and diff. Cue shaping
does not apply. No speech makes an empty file.
"""

from __future__ import annotations

from collections.abc import Iterator

from qwenscribe.core.transcript import Transcript


def txt_pieces(transcript: Transcript) -> Iterator[str]:
    for segment in transcript.segments:
        paragraph = " ".join(segment.text.split())
        if paragraph:
            yield paragraph + "\n"
