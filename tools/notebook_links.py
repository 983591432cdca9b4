"""A MkDocs hook (mkdocs.yml `hooks:`): links from a notebook page to the other pages.

mkdocs-jupyter renders a notebook to HTML itself, so MkDocs never rewrites its links: a
`[sampling](sampling.md)` link, right on GitHub and in Jupyter, would point at the Markdown
source on the site. This hook turns each relative `*.md` / `*.ipynb` link of a notebook page
into the URL of that page, and logs a warning (fatal under `mkdocs build --strict`) for a link
to a page that does not exist.
"""

from __future__ import annotations

import logging
import posixpath
import re

from mkdocs.utils import get_relative_url

log = logging.getLogger("mkdocs.hooks.notebook_links")
LINK = re.compile(r'href="(?![a-z]+:|#|/)([^"#]+\.(?:md|ipynb))(#[^"]*)?"')


def on_page_content(html, page, config, files):
    if not page.file.src_uri.endswith(".ipynb"):
        return html

    def rewrite(match: re.Match) -> str:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(page.file.src_uri), match[1]))
        file = files.get_file_from_path(target)
        if file is None:
            log.warning(f"{page.file.src_uri} links to {match[1]}, which is not a page of the site")
            return match[0]
        return f'href="{get_relative_url(file.url, page.url)}{match[2] or ""}"'

    return LINK.sub(rewrite, html)
