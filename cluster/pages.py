"""Static page files served from memory (the gate's chat page, center's /ops view)."""
from __future__ import annotations

import os

# Sent with every page file: no caching surprises, no sniffing, no framing, same-origin only.
SECURITY_HEADERS = [
    ("Cache-Control", "no-cache"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy",
     "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
]


def load_pages(directory: str, pages: dict) -> dict:
    """{url path: (file name, content type)} -> {url path: (bytes, content type)} for every
    file that exists in ``directory``."""
    files = {}
    for path, (name, ctype) in pages.items():
        try:
            with open(os.path.join(directory, name), "rb") as fh:
                files[path] = (fh.read(), ctype)
        except FileNotFoundError:
            continue
    return files
