"""Media types by a URL's file extension: the content type of a user's media, the template of ours.

TeleSign names neither: an inbound MMS gives each media as `url_image_N`, `url_video_N` or `url_audio_N`, and an
outbound MMS names only the template ("image", "video" or "audio") beside the URL.
"""

from __future__ import annotations

import mimetypes
from typing import Literal
from urllib.parse import urlsplit

MediaKind = Literal["image", "video", "audio"]
KINDS: tuple[MediaKind, ...] = ("image", "video", "audio")
DEFAULT_TEMPLATE: MediaKind = "image"  # a URL that does not say what it is: pictures are most MMS

# Python's built-in table only, so a guess does not depend on the machine's /etc/mime.types; with the MMS
# formats it lacks, and 3GPP as video (the built-in table says audio/3gpp; MMS clips are mostly video).
_MIME_TYPES = mimetypes.MimeTypes(filenames=())
for _type, _extension in (("audio/amr", ".amr"), ("audio/mp4", ".m4a"), ("audio/ogg", ".ogg"),
                          ("video/3gpp", ".3gp"), ("video/3gpp2", ".3g2")):
    _MIME_TYPES.add_type(_type, _extension)  # this instance's own table: the module's stays as it is
# Containers that carry sound alone as well as pictures: an audio field's .mp4 is audio/mp4.
_AUDIO_OR_VIDEO = frozenset({"audio", "video"})


def content_type_of(url: str, kind: MediaKind | None = None) -> str | None:
    """The media type of the file at `url` by its path's extension, None when unknown; `kind` is what the
    message says it is, which decides between audio and video for containers of either."""
    try:
        path = urlsplit(url).path
    except ValueError:  # a URL that cannot be parsed has no extension to go by
        return None
    content_type, _ = _MIME_TYPES.guess_type(path, strict=False)
    if content_type is None:
        return None
    major, _, subtype = content_type.partition("/")
    if kind is not None and kind != major and {kind, major} <= _AUDIO_OR_VIDEO:
        return f"{kind}/{subtype}"
    return content_type


def mms_template(url: str) -> MediaKind:
    """TeleSign's MMS template for the media at `url`: its kind by the extension, else DEFAULT_TEMPLATE."""
    content_type = content_type_of(url)
    major = content_type.partition("/")[0] if content_type else ""
    return next((kind for kind in KINDS if kind == major), DEFAULT_TEMPLATE)
