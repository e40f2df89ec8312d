"""The README points only inside the repository, and the files it names exist."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_readme_links_stay_in_the_repository():
    text = (ROOT / "README.md").read_text()
    assert "../" not in text, "README points outside the repository"
    targets = re.findall(r"\]\(([^)#]+)", text)
    assert "docs/ARCHITECTURE.md" in targets
    for target in targets:
        if re.match(r"[a-z]+://", target):
            continue
        assert (ROOT / target).exists(), target


def test_architecture_note_names_existing_files():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    for path in set(re.findall(r"`((?:csrc|fastlstm|tests)/[\w/.*<>]+)`", text)):
        if "*" in path or "<" in path:
            continue
        assert (ROOT / path).exists(), path
