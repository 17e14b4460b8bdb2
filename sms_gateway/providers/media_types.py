"""Media types by a file's extension, for providers that give a media's URL without its content type (Sinch,
TeleSign: an inbound MMS gives each media as `url_image_N`, `url_video_N` or `url_audio_N`), or want its kind
("image", "video" or "audio", TeleSign's MMS template) beside the URL."""

from __future__ import annotations

import mimetypes
from typing import Literal
from urllib.parse import urlsplit

MediaKind = Literal["image", "video", "audio"]
KINDS: tuple[MediaKind, ...] = ("image", "video", "audio")

# Python's built-in table only, so a guess does not depend on the machine's /etc/mime.types; with the MMS
# formats it lacks, and 3GPP as video (the built-in table says audio/3gpp; MMS clips are mostly video).
_MIME_TYPES = mimetypes.MimeTypes(filenames=())
for _type, _extension in (
    ("audio/amr", ".amr"),
    ("audio/mp4", ".m4a"),
    ("audio/ogg", ".ogg"),
    ("video/3gpp", ".3gp"),
    ("video/3gpp2", ".3g2"),
):
    _MIME_TYPES.add_type(_type, _extension)  # this instance's own table: the module's stays as it is
# Containers that carry sound alone as well as pictures: an audio field's .mp4 is audio/mp4.
_AUDIO_OR_VIDEO = frozenset({"audio", "video"})


def content_type_of(url: str, kind: MediaKind | None = None, *, filename: str | None = None) -> str | None:
    """The media type of the file at `url` by its path's extension, else by `filename`'s, None when unknown;
    `kind` is what the message says it is, which decides between audio and video for containers of either."""
    try:
        path = urlsplit(url).path
    except ValueError:  # a URL that cannot be parsed has no extension to go by
        path = ""
    content_type = next(
        (
            found
            for name in (path, filename or "")
            if (found := _MIME_TYPES.guess_type(name, strict=False)[0]) is not None
        ),
        None,
    )
    if content_type is None:
        return None
    major, _, subtype = content_type.partition("/")
    if kind is not None and kind != major and {kind, major} <= _AUDIO_OR_VIDEO:
        return f"{kind}/{subtype}"
    return content_type


def kind_of(url: str) -> MediaKind | None:
    """The kind of the media at `url` by its extension, None when it does not say."""
    content_type = content_type_of(url)
    major = content_type.partition("/")[0] if content_type else ""
    return next((kind for kind in KINDS if kind == major), None)
