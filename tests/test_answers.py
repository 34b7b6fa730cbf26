"""Any answer that copier.yml accepts renders a valid project; any other is refused, before
anything is written, with a message that says what is allowed.

The free-text answers reach Python, TOML, YAML, Markdown and the HTML of the API docs: a
property-based test drives arbitrary Unicode through them and reads each value back
from every file it lands in.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from copier import run_copy
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from conftest import REPO, build_once, run
from test_render import COMPOSE_FILES, assert_valid, text_files

BIN = Path(sys.executable).parent
TEXT_QUESTIONS = ("project_name", "description", "author_name")
# The rendering the app probe can import: no database, the probe's Python.
FIXED_ANSWERS = {"project_slug": "service", "database": "none", "python_version": "3.11"}
# Free text with what each target reads specially: quotes, backslashes, docstring and
# Markdown syntax, characters outside the BMP, look-alike letters, surrounding spaces.
AWKWARD_TEXT = [
    'Say "hi" \\ to """everyone"""',
    "Rocket \U0001f680 \U0001d518\U0001d52b\U0001d526\U0001d520\U0001d52c\U0001d521\U0001d522",
    "  Caf\u00e9 \u2013 na\u00efve \u2018quotes\u2019  ",
    "# *Not* _a_ `heading` [link](x) ~~no~~ 1. & &amp; \\",
    "- 1) > =",
    "Ω" * 80,
]


def render(template: Path, destination: Path, **answers: Any) -> Path:
    run_copy(str(template), destination, data=answers, defaults=True, quiet=True)
    return destination


# Refusals


@pytest.mark.parametrize(
    ("answers", "allowed"),
    [
        ({"production_hardening": "maybe"}, "production_hardening must be true or false"),
        ({"production_hardening": 1}, "production_hardening must be true or false"),
        ({"project_name": "Billing\nAPI"}, "project_name must be one line of text"),
        ({"project_name": "Ω" * 81}, "project_name must be at most 80 characters long"),
        ({"project_name": "<b>Billing</b>"}, "project_name must not contain\n< or >"),
        ({"project_name": "AT&amp;T"}, "nor & right before a letter or #"),
        ({"description": "  "}, "description must not be empty"),
        ({"description": "Bills\tcustomers"}, "description must be one line of text"),
        ({"description": "x" * 301}, "description must be at most 300 characters long"),
        ({"author_name": "Payments\x00"}, "author_name must be one line of text"),
        ({"author_name": "x" * 101}, "author_name must be at most 100 characters long"),
        ({"author_email": "team\x7f@example.com"}, "author_email must be one line of text"),
    ],
    ids=repr,
)
def test_bad_text_or_boolean_is_refused_with_what_is_allowed(template, tmp_path, answers, allowed):
    destination = tmp_path / "project"
    with pytest.raises(ValueError, match=r"question '") as refused:
        render(template, destination, **answers)
    assert allowed.replace("\n", " ") in str(refused.value).replace("\n", " ")
    assert not destination.exists()


@pytest.mark.parametrize(
    ("given_answer", "recorded"),
    [("yes", True), ("off", False)],
)
def test_hardening_takes_booleans_and_their_yaml_words(template, tmp_path, given_answer, recorded):
    project = render(template, tmp_path / "project", production_hardening=given_answer)
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["production_hardening"] is recorded
    config = (project / "backend/app/core/config.py").read_text()
    assert f"\nPRODUCTION_HARDENING = {recorded}\n" in config


# Valid renderings

SPLIT_CHARACTER = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def assert_files_parse_and_lint(project: Path) -> None:
    """Every Python, TOML and YAML file parses, no string holds a character split into a
    surrogate pair, the compose files and workflows match their schemas, and ruff finds
    nothing."""
    for path in text_files(project):
        text = path.read_text()
        if path.suffix == ".py":
            for node in ast.walk(ast.parse(text, str(path))):
                # A character outside the BMP escaped as JSON does becomes a surrogate pair
                # in Python; the generated tests' deliberate lone surrogates are fine.
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    assert not SPLIT_CHARACTER.search(node.value), (path, node.value)
        elif path.suffix == ".toml":
            tomllib.loads(text)
        elif path.suffix in {".yml", ".yaml"}:
            document = yaml.safe_load(text)
            if path.name in COMPOSE_FILES:
                assert_valid(document, "compose-spec", path)
            elif path.parent.name == "workflows":
                assert_valid(document, "github-workflows", path)
    # The backend's configuration also covers the project's own scripts.
    for command in (["check"], ["format", "--check"]):
        result = run(
            *(BIN / "ruff", *command, "--no-cache", ".", "../scripts"),
            cwd=project / "backend",
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "slug", ["null", "true", "false", "none", "yes", "no", "on", "off", "class", "import"]
)
def test_slug_that_is_a_keyword_of_yaml_or_python_works_everywhere(template, tmp_path, slug):
    project = render(template, tmp_path / "project", project_slug=slug)
    assert_files_parse_and_lint(project)
    compose = yaml.safe_load((project / "docker-compose.yml").read_text())
    assert compose["name"] == slug
    assert compose["services"]["db"]["environment"]["POSTGRES_DB"] == f"${{POSTGRES_DB:-{slug}}}"
    pyproject = tomllib.loads((project / "backend/pyproject.toml").read_text())
    assert pyproject["project"]["name"] == slug


class TitleParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.titles: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self._in_title = tag == "title"
        if self._in_title:
            self.titles.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.titles[-1] += data


def html_titles(html: str) -> list[str]:
    parser = TitleParser()
    parser.feed(html)
    return parser.titles


def markdown_blocks(markdown: str) -> list[str]:
    """The text of each block, as a Markdown renderer shows it."""
    blocks = []
    for token in MarkdownIt("commonmark").parse(markdown):
        if token.type == "inline":
            blocks.append("".join(child.content for child in token.children or [] if child.content))
    return blocks


class AppProbe:
    """One interpreter of the generated project's runtime lock that imports each
    rendered app and returns its answers (tests/app_probe.py)."""

    def __init__(self, python: Path, log: Path) -> None:
        self._log = log.open("w")
        self._process = subprocess.Popen(
            [python, Path(__file__).with_name("app_probe.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={"PATH": "/usr/bin:/bin"},
        )

    def __call__(self, backend: Path) -> dict[str, Any]:
        assert self._process.stdin
        assert self._process.stdout
        self._process.stdin.write(f"{backend}\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        assert line, f"the probe died; see {self._log.name}"
        return json.loads(line)

    def close(self) -> None:
        if self._process.stdin:
            self._process.stdin.close()
        self._process.wait(timeout=30)
        self._log.close()


@pytest.fixture(scope="session")
def app_probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProbe]:
    # Built once for all test processes: they share the parent of their base directories.
    def install(venv: Path) -> None:
        uv = BIN / "uv"
        run(uv, "venv", "--quiet", "--python", sys.executable, venv)
        lock_file = REPO / "locks" / "none" / "requirements.txt"
        python = venv / "bin" / "python"
        run(uv, "pip", "sync", "--quiet", "--require-hashes", "--python", python, lock_file)

    venv = build_once(tmp_path_factory.getbasetemp().parent / "app-none-venv", install)
    probe = AppProbe(venv / "bin" / "python", tmp_path_factory.mktemp("probe") / "log")
    yield probe
    probe.close()


def accepted_text(limit: int) -> st.SearchStrategy[str]:
    """Arbitrary Unicode, mostly of the kind the validators accept (one line), so that
    most examples render; the rest must be refused cleanly."""
    one_line = st.characters(exclude_categories=["Cc", "Cs", "Zl", "Zp"])
    return st.one_of(
        st.text(one_line, min_size=1, max_size=limit),
        st.text(min_size=0, max_size=limit // 4),
    )


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    project_name=accepted_text(90),
    description=accepted_text(320),
    author_name=accepted_text(110),
)
@example(project_name="My Service", description="A FastAPI backend service", author_name="Ann")
@example(project_name=AWKWARD_TEXT[0], description=AWKWARD_TEXT[1], author_name=AWKWARD_TEXT[2])
@example(project_name=AWKWARD_TEXT[1], description=AWKWARD_TEXT[3], author_name=AWKWARD_TEXT[0])
@example(project_name=AWKWARD_TEXT[5], description=AWKWARD_TEXT[4] * 37, author_name="x" * 100)
def test_any_accepted_text_renders_a_valid_project_that_shows_it_as_given(
    template, tmp_path_factory, app_probe, project_name, description, author_name
):
    answers = {"project_name": project_name, "description": description, "author_name": author_name}
    destination = tmp_path_factory.mktemp("rendering") / "project"
    try:
        # A fixed slug: the one derived from arbitrary text is often empty, and refused.
        render(template, destination, **FIXED_ANSWERS, **answers)
    except ValueError as error:
        refused = str(error)
    else:
        refused = ""
    event("refused" if refused else "rendered")
    if refused:
        assert any(f"question '{name}'" in refused for name in TEXT_QUESTIONS), refused
        assert not destination.exists()
        return
    project = destination
    name, summary, author = (value.strip() for value in answers.values())

    assert_files_parse_and_lint(project)
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert {key: recorded[key] for key in answers} == answers
    metadata = tomllib.loads((project / "backend/pyproject.toml").read_text())["project"]
    assert metadata["description"] == summary
    assert metadata["authors"][0]["name"] == author
    assert markdown_blocks((project / "README.md").read_text())[:2] == [name, summary]

    served = app_probe(project / "backend")
    assert "error" not in served, served.get("error")
    assert served["/openapi.json"]["status"] == 200
    info = json.loads(served["/openapi.json"]["body"])["info"]
    assert (info["title"], info["description"]) == (name, summary)
    assert served["/docs"]["status"] == 200
    assert html_titles(served["/docs"]["body"]) == [f"{name} - Swagger UI"]
