"""README.md and docs/*.md name only what exists: every repository path, link, `make` target,
`python -m` module and flag, and FASTLSTM_* variable they mention is checked against the tree,
the Makefile, the module's own --help and the sources. The README stays at most 250 lines."""

import functools
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README] + sorted((ROOT / "docs").glob("*.md"))
README_MAX_LINES = 250

# Extensions that make a bare word in backticks a file name (`gemm.cpp`, `wheel_smoke.py`).
FILE_EXT = {"py", "md", "sh", "json", "txt", "toml", "cfg", "ini", "yml", "yaml", "h", "hpp",
            "cpp", "cc", "cu", "cuh", "png", "csv", "xml"}
# What the Makefile creates, not the repository: named in docs, absent from a fresh checkout.
MADE_BY_MAKE = {".venv", ".whl", "dist"}
SKIP_DIRS = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".whl",
             "node_modules"}


def _rel(doc):
    return doc.relative_to(ROOT).as_posix()


def _split(text):
    """(prose with fenced blocks blanked, [(language, block text)])."""
    blocks = []

    def keep(m):
        blocks.append((m.group(1).strip(), m.group(2)))
        return "\n" * m.group(0).count("\n")
    prose = re.sub(r"^```([^\n]*)\n(.*?)^```[ \t]*$", keep, text, flags=re.S | re.M)
    return prose, blocks


def _code_spans(prose):
    return [s.replace("\n", " ").strip() for s in re.findall(r"`([^`]+)`", prose)]


def _commands(doc):
    """Inline code spans, and the lines of fenced blocks that are not Python."""
    prose, blocks = _split(doc.read_text())
    commands = _code_spans(prose)
    for lang, body in blocks:
        if lang not in ("python", "py"):
            commands += [line.split(" #")[0] for line in body.splitlines()]
    return commands


@functools.lru_cache(maxsize=None)
def _tree_names():
    names = set()
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        names.update(filenames)
    return names


@functools.lru_cache(maxsize=None)
def _top_level():
    return {p.name for p in ROOT.iterdir()} | MADE_BY_MAKE


def _is_placeholder(segment):
    return re.fullmatch(r"[A-Z][A-Z0-9_]*", segment) is not None  # OUTDIR


def _repo_paths(word):
    """The word as a repository path (relative to ROOT), or None when it is not one."""
    word = word.strip("()[]{},;:'\"")
    if not re.fullmatch(r"[\w.\-/*<>]+", word) or word.startswith("--"):
        return None
    segments = [s for s in word.split("/") if s]
    if not segments or any(_is_placeholder(s) for s in segments):
        return None
    last = segments[-1]
    stem, dot, ext = last.rpartition(".")
    has_ext = bool(dot) and bool(stem) and ext in FILE_EXT
    if "/" in word:
        return word if (segments[0] in _top_level() or has_ext) else None
    return word if has_ext else None


def _exists(path):
    """A path from ROOT (globs: * and <placeholder>), or a bare file name found in the tree."""
    pattern = re.sub(r"<[^>]*>", "*", path).rstrip("/")
    if pattern.split("/")[0] in MADE_BY_MAKE:
        return True
    if "/" not in pattern:
        return (ROOT / pattern).exists() or any(pathlib.PurePath(n).match(pattern)
                                                for n in _tree_names())
    if "*" in pattern:
        return any(ROOT.glob(pattern))
    return (ROOT / pattern).is_dir() if path.endswith("/") else (ROOT / pattern).exists()


def _slug(heading):
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(doc):
    prose, _ = _split(doc.read_text())
    seen, anchors = {}, set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", prose, flags=re.M):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


@functools.lru_cache(maxsize=None)
def _make_targets():
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, flags=re.M))


@functools.lru_cache(maxsize=None)
def _help(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"python -m {module} --help failed:\n{proc.stderr}"
    return proc.stdout


def _module_exists(module):
    base = ROOT.joinpath(*module.split("."))
    return (base / "__main__.py").exists() or base.with_suffix(".py").exists()


@pytest.fixture(params=DOCS, ids=_rel)
def doc(request):
    return request.param


def test_readme_is_at_most_250_lines():
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail into docs/")


def test_readme_links_every_doc_and_stays_in_the_repository():
    text = README.read_text()
    assert "../" not in text, "README points outside the repository"
    targets = re.findall(r"\]\(([^)#\s]+)", text)
    for doc in DOCS[1:]:
        assert _rel(doc) in targets, f"README does not link {_rel(doc)}"


def test_links_resolve(doc):
    """Relative links and images resolve from the file that holds them, inside the repository;
    an #anchor must be a heading of its target."""
    prose, _ = _split(doc.read_text())
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if ROOT not in dest.parents and dest != ROOT:
            bad.append(f"{target}: outside the repository")
        elif not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {_rel(dest)}")
    assert not bad, f"{_rel(doc)}: " + "; ".join(bad)


def _prose_paths(doc):
    """Paths written in prose, outside code and links: words that start with a top-level
    folder of the repository (`see benchmarks/contenders.py`)."""
    prose, _ = _split(doc.read_text())
    prose = re.sub(r"`[^`]+`|\]\([^)]*\)", " ", prose)
    folders = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and p.name not in SKIP_DIRS)
    return re.findall(rf"(?<![\w/.-])((?:{'|'.join(map(re.escape, folders))})/[\w./*<>-]*[\w/*>])",
                      prose)


def test_named_paths_exist(doc):
    """Every repository path in backticks, in a non-Python code block or in prose exists (from
    the repository root; a bare file name somewhere in the tree)."""
    words = [w for cmd in _commands(doc) for w in cmd.split()] + _prose_paths(doc)
    missing = sorted({p for word in words if (p := _repo_paths(word)) and not _exists(p)})
    assert not missing, f"{_rel(doc)} names paths that do not exist: {missing}"


def test_make_targets_exist(doc):
    named = {t for cmd in _commands(doc)
             for t in re.findall(r"(?:^|[\s;&|(])make\s+([A-Za-z][\w.-]*)", cmd)}
    missing = sorted(named - _make_targets())
    assert not missing, f"{_rel(doc)} names make targets the Makefile lacks: {missing}"


def test_python_modules_and_flags_exist(doc):
    """`python -m X --flag`: X is a module of this repository and --flag is in its --help."""
    bad = []
    for cmd in _commands(doc):
        for module, args in re.findall(r"python -m ([\w.]+)((?:\s+[^\s;&|]+)*)", cmd):
            if not module.split(".")[0] in _top_level():
                continue  # another package's module (pip, pytest)
            if not _module_exists(module):
                bad.append(f"no module {module}")
                continue
            for flag in re.findall(r"(?<!\S)(--[\w-]+)", args):
                if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", _help(module)):
                    bad.append(f"python -m {module}: no {flag} in its --help")
    assert not bad, f"{_rel(doc)}: " + "; ".join(bad)


def test_fastlstm_variables_exist(doc):
    """Every FASTLSTM_* environment variable or macro named appears in the sources."""
    named = set(re.findall(r"\bFASTLSTM_[A-Z0-9_]*[A-Z0-9]\b", doc.read_text()))
    sources = "".join(p.read_text(errors="replace")
                      for d in ("csrc", "fastlstm", "scripts", "benchmarks")
                      for p in (ROOT / d).rglob("*") if p.is_file() and p.suffix != ".pyc")
    sources += (ROOT / "setup.py").read_text() + (ROOT / "Makefile").read_text()
    missing = sorted(v for v in named if v not in sources)
    assert not missing, f"{_rel(doc)} names variables no source reads: {missing}"


def test_fastlstm_names_exist(doc):
    """Every `fastlstm.name` (and `fastlstm.module.name`) named is an attribute or a submodule."""
    import importlib

    import fastlstm
    missing = []
    for name in sorted(set(re.findall(r"(?<![\w.])fastlstm\.([A-Za-z_][\w.]*\w)",
                                      doc.read_text()))):
        obj, path = fastlstm, "fastlstm"
        for part in name.split("."):
            path += "." + part
            if hasattr(obj, part):
                obj = getattr(obj, part)
                continue
            try:
                obj = importlib.import_module(path)
            except ImportError:
                missing.append("fastlstm." + name)
                break
    assert not missing, f"{_rel(doc)} names what fastlstm lacks: {missing}"
