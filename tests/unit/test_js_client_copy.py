"""The gate serves the JavaScript client package's module at /zonechat.js.

clients/js/zonechat.js is the one source; gate/static/zonechat.js is a symbolic link to it,
so the page imports it from its own origin and a wheel (package data ``gate/static/*``,
which setuptools copies through the link) carries the file itself.
"""
import os

from gate import http

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = os.path.join(REPO, "clients", "js", "zonechat.js")
COPY = os.path.join(http.STATIC_DIR, "zonechat.js")


def read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def test_the_served_file_is_the_package_module():
    assert os.path.realpath(COPY) == os.path.realpath(SOURCE), \
        "gate/static/zonechat.js must link to clients/js/zonechat.js"
    assert read(COPY) == read(SOURCE)


def test_the_gate_serves_it_and_the_page_imports_it():
    body, ctype = http.load_static()["/zonechat.js"]
    assert body == read(SOURCE)
    assert ctype.startswith("text/javascript")
    assert b"from './zonechat.js'" in read(os.path.join(http.STATIC_DIR, "client.js"))
