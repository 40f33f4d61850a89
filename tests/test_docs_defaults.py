"""Defaults stated in the docs stay true: wherever a page or docstring writes `PretrainConfig.FIELD=VALUE` or
`FinetuneConfig.FIELD=VALUE` in backticks, VALUE must be that dataclass field's default. A changed recipe then
fails here until the sentence is updated, instead of leaving a stale number behind (issue 12, item 5)."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest
from conftest import REPO_ROOT

from finetune.config import FinetuneConfig
from pretrain.config import PretrainConfig

STATED = re.compile(r"`(PretrainConfig|FinetuneConfig)\.(\w+)=([^`]+)`")
PAGES = sorted([*REPO_ROOT.glob("docs/**/*.md"), REPO_ROOT / "README.md", *REPO_ROOT.glob("pretrain/*.py"),
                *REPO_ROOT.glob("finetune/*.py")])


def defaults(cls) -> dict:
    instance = cls()
    return {f.name: getattr(instance, f.name) for f in fields(cls)}


def statements() -> list[tuple[str, str, str, str]]:
    found = []
    for page in PAGES:
        for cls, name, value in STATED.findall(page.read_text(encoding="utf-8")):
            found.append((str(page.relative_to(REPO_ROOT)), cls, name, value))
    return found


def test_the_docs_state_some_defaults_this_way():
    assert any(name == "mask_rate" for _, _, name, _ in statements())


@pytest.mark.parametrize("page,cls,name,value", statements())
def test_stated_default_matches_the_config(page, cls, name, value):
    table = defaults({"PretrainConfig": PretrainConfig, "FinetuneConfig": FinetuneConfig}[cls])
    assert name in table, f"{page}: {cls} has no field {name!r}"
    actual = table[name]
    stated = type(actual)(value) if isinstance(actual, (int, float)) and not isinstance(actual, bool) else value
    assert stated == actual, f"{page} says {cls}.{name}={value}, but the default is {actual!r}: update the page"


@pytest.mark.parametrize("cls", [PretrainConfig, FinetuneConfig])
def test_help_shows_every_flag_with_its_default_and_no_argparse_internals(cls):
    import finetune.config
    import pretrain.config

    parser = (pretrain.config if cls is PretrainConfig else finetune.config).build_parser()
    text = " ".join(parser.format_help().split())  # argparse %-formats help: a bare "%" once dumped its dict here
    assert "option_strings" not in text and "%%" not in text
    for f in fields(cls):
        if f.name != "model":
            value = getattr(cls(), f.name)
            assert f"(default {value})" in text if value != "" else "(default '' (off))" in text, f.name
    if cls is PretrainConfig:
        assert "6% as Izsak et al. 2021" in text
