"""The documentation site: mkdocs builds docs/ with --strict (no broken link, anchor or API reference), and the
built site, opened from disk in headless chromium, has every page in its navigation, each page's title, and
navigation that works by clicking."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from headless import Browser


def nav_pages() -> list[tuple[str, str]]:
    """(navigation title, page file) of mkdocs.yml's nav, in order."""
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]
    return [next(iter(entry.items())) for entry in nav]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=REPO, capture_output=True, text=True, env=os.environ | {"NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return site_dir


@pytest.fixture
def browser(tmp_path):
    browser = Browser(tmp_path / "chromium")
    yield browser
    browser.close()


def test_every_docs_page_is_in_the_navigation_and_every_readme_link_resolves():
    pages = {page for _, page in nav_pages()}
    on_disk = {path.name for path in (REPO / "docs").glob("*.md")}
    assert pages == on_disk
    readme = (REPO / "README.md").read_text()
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)\)", readme))
    assert linked == pages - {"index.md"}
    assert len(readme.splitlines()) <= 200


def test_the_built_site_navigates_in_chromium(site, browser):
    pages = nav_pages()
    browser.open((site / "index.html").as_uri())
    # The navigation lists every page under its title, linking to its .html (the site works from disk).
    links = browser.js(
        "[...document.querySelectorAll('.md-nav--primary > .md-nav__list > .md-nav__item > a.md-nav__link')]"
        ".map(a => [a.textContent.trim(), a.getAttribute('href')])"
    )
    assert [title for title, _ in links] == [title for title, _ in pages]
    assert [href.split("/")[-1] for _, href in links] == [page.replace(".md", ".html") for _, page in pages]
    # Clicking a navigation entry opens that page.
    browser.js("document.querySelector('.md-nav--primary a.md-nav__link[href$=\"verifiers.html\"]').click()")
    browser.wait_for("location.pathname.endsWith('verifiers.html') && document.readyState === 'complete'")
    assert browser.js("document.querySelector('article h1').textContent.trim()").startswith("Verifiers")
    # One page per section: each opens with its title and content, and no script error.
    for title, page in pages:
        browser.open((site / page.replace(".md", ".html")).as_uri())
        heading = browser.js("document.querySelector('article h1').textContent.trim()")
        words = browser.js("document.querySelector('article').innerText.split(/\\s+/).length")
        assert heading and words > 50, (page, heading, words)
    # The generated configuration reference and the API of the extension points are there.
    browser.open((site / "configuration.html").as_uri())
    assert browser.js("[...document.querySelectorAll('code')].some(c => c.textContent === 'algorithm.group_size')")
    browser.open((site / "extending.html").as_uri())
    assert browser.js("!!document.getElementById('grpo_cli.algo.registry.Registry')")
    assert browser.errors == []
