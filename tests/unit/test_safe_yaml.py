"""The allow-list check of safe_yaml on YAML texts: nothing is built.

Each payload would create a marker if it were built; the tests check that
the check refuses it, names where it is written, and that the marker is
absent. Two payloads hidden in plain strings are first shown to run under
HyperPyYAML alone, so that their refusal means something.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from speechbrain_sed_condmix.model_folder import copy_node, dump_yaml
from speechbrain_sed_condmix.safe_yaml import (
    ALLOWED_TARGETS,
    UntrustedYAMLError,
    check_yaml,
    yaml_tags,
)

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted(REPO.glob("recipes/*/SED/hparams/*.yaml"))

# (YAML with {m} for the marker, key, tag the message must name)
PAYLOADS = {
    "apply": ('p: !apply:os.mkdir ["{m}"]', "p", "!apply:os.mkdir"),
    "new": (
        'p: !new:subprocess.Popen [[mkdir, "{m}"]]',
        "p",
        "!new:subprocess.Popen",
    ),
    "name": ("p: !name:builtins.eval", "p", "!name:builtins.eval"),
    "module": ("p: !module:os", "p", "!module:os"),
    "applyref": ('p: !applyref:os.mkdir ["{m}"]', "p", "!applyref:os.mkdir"),
    "nested": (
        'n:\n  a: [1, {{b: [x, {{c: !apply:os.mkdir ["{m}"]}}]}}]',
        "n.a[1].b[1].c",
        "!apply:os.mkdir",
    ),
    "ref": (
        '__h: !apply:os.mkdir ["{m}"]\nuse: !ref <__h>',
        "__h",
        "!apply:os.mkdir",
    ),
    "key": ('? !apply:os.mkdir ["{m}"]\n: 1', "?", "!apply:os.mkdir"),
    "python": (
        'p: !!python/object/apply:os.mkdir ["{m}"]',
        "p",
        "tag:yaml.org,2002:python/object/apply:os.mkdir",
    ),
    "handle": (
        "%TAG !e! tag:yaml.org,2002:python/object/apply:\n---\n"
        'a: 1\np: !e!os.mkdir ["{m}"]',
        "p",
        "python/object/apply:os.mkdir",
    ),
    "include": ("p: !include:other.yaml", "p", "!include:other.yaml"),
}


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_payload_is_refused_and_named(name, tmp_path):
    template, key, tag = PAYLOADS[name]
    marker = tmp_path / "ran"
    text = template.format(m=marker) + "\n"
    if not text.startswith("%"):
        text = "a: 1\nb: [1, 2]\n" + text
    with pytest.raises(UntrustedYAMLError) as caught:
        check_yaml(text, source="folder/hyperparams.yaml")
    message = str(caught.value)
    assert message.startswith("folder/hyperparams.yaml names ")
    assert f"key '{key}'" in message and tag in message
    assert "trust_remote_code=True (sed-detect --trust-remote-code)" in message
    assert not marker.exists()
    # Trusted, the targets are returned for the log (nothing built here).
    found = check_yaml(text, trust_remote_code=True)
    assert any(t.key == key and tag in t.tag for t in found)
    assert not marker.exists()


def test_strings_that_hyperpyyaml_parses_again_are_checked(tmp_path):
    """A "(...)" scalar is a !tuple parsed with PyYAML's full loader, and
    !ref joins strings: both hide tags in plain strings."""
    marker = tmp_path / "ran"
    as_tuple = f"x: (!!python/object/apply:os.mkdir [{marker}])\n"
    joined = (
        'a: "(!!python/object/apply:os.mkdir"\n'
        f'b: " [{marker}])"\n'
        "c: !ref <a><b>\n"
    )
    with pytest.raises(UntrustedYAMLError, match=r"'x \(tuple\)\[0\]'"):
        check_yaml(as_tuple)
    with pytest.raises(UntrustedYAMLError, match="after its !ref references"):
        check_yaml(joined)
    assert not marker.exists()
    # HyperPyYAML alone runs both, in a fresh process (the joined string
    # only on the first load: later round trips quote it).
    script = "import sys; from hyperpyyaml import load_hyperpyyaml as load\n"
    script += "for text in sys.argv[1:]:\n    load(text)\n"
    other = tmp_path / "ran2"
    as_tuple2 = as_tuple.replace(str(marker), str(other))
    run = [sys.executable, "-c", script, joined, as_tuple2]
    subprocess.run(run, check=True, capture_output=True, timeout=60)
    assert marker.is_dir() and other.is_dir()


def test_plain_data_and_allowed_targets_pass():
    text = (
        "a: !!str 5\nb: !tuple (1, 2)\nc: (3, 4)\nd: &x [1, {e: 2}]\n"
        "f: *x\ng: !ref <a>\nh: !copy <d>\nn: !apply:len [[1, 2]]\n"
        "m: !new:speechbrain_sed_condmix.lobes.crnn.CRNN {n_class: 2}\n"
    )
    assert check_yaml(text) == []
    tags = {t.tag for t in yaml_tags(text)}
    assert {"!tuple", "!ref", "!copy", "!apply:len"} < tags


def test_not_yaml_is_a_clear_error():
    with pytest.raises(ValueError, match="m.yaml: not valid YAML"):
        check_yaml("a: [1, 2\nb: {", source="m.yaml")


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_allow_list_covers_what_export_copies_from_every_recipe(recipe):
    """sed-export copies encoder, frontend and student (refs resolved)."""
    from hyperpyyaml import resolve_references

    from speechbrain_sed_condmix.model_folder import yaml_parser

    overrides = {"data_folder": "/data"}
    resolved = resolve_references(recipe.read_text(), overrides).getvalue()
    tree = yaml_parser().load(resolved)
    parts = {k: copy_node(tree[k]) for k in ("encoder", "frontend", "student")}
    text = dump_yaml(parts)
    assert check_yaml(text) == []
    calls = {t.tag for t in yaml_tags(text) if t.tag.count(":") == 1}
    listed = {p + t for p, targets in ALLOWED_TARGETS.items() for t in targets}
    assert calls <= listed and calls
