"""What the YAML of a model folder may build, checked before it is built.

HyperPyYAML builds a Python object for every ``!new:``, ``!name:``,
``!apply:``, ``!module:`` and ``!applyref:`` tag it loads, so a
``hyperparams.yaml`` from someone else can run any code: ``payload:
!apply:os.system [...]`` is enough. :func:`check_yaml` reads the text with
YAML's composer only (nodes and their tags, nothing constructed), collects
every tag, and refuses any that is not

* a plain data tag: YAML's own (``!!str``, ``!!int``, ``!!map``, ...) or
  HyperPyYAML's ``!ref``, ``!copy``, ``!tuple`` and ``!PLACEHOLDER``;
* a target on :data:`ALLOWED_TARGETS`: what ``sed-export`` and
  ``sed-import`` write.

Everything else is refused, ``!!python/...`` tags and ``!include:`` (it
reads another file) included. The whole file is walked, keys, lists,
aliases and the ``__`` keys that HyperPyYAML drops after building them
included, so a payload that a ``!ref`` points to is found where it is
written. Two more places hide YAML in plain strings, and both are checked:

* a scalar written ``(...)`` is a ``!tuple`` to HyperPyYAML, whose content
  it parses with PyYAML's full loader (``!!python/object/apply:`` runs
  there); its content is composed and checked as well;
* ``!ref <a><b>`` joins strings, and the joined text is parsed again; so
  the text with its references resolved (HyperPyYAML's own
  ``resolve_references``, which builds nothing once the first pass found
  no call tags outside the list) is checked a second time.

The opt-in is ``trust_remote_code=True`` (``sed-detect
--trust-remote-code``): the targets outside the list are then returned, for
the caller's log, and built.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import re
from dataclasses import dataclass

#: What a model folder's YAML may build, by tag: the classes and functions
#: that the folders of ``sed-export`` and ``sed-import`` name (label grid,
#: front ends, networks, SpeechBrain's Pretrainer). No torch target is
#: written by either. ``len`` and the class list reader of the custom-data
#: recipes are for older folders only: ``sed-export`` once kept
#: ``model.n_class: !apply:len [!apply:...load_classes {classes_file:
#: ...}]`` from the training YAML (such a folder loads only where that
#: file exists); it now writes the class list and its length as data.
ALLOWED_TARGETS = {
    "!new:": frozenset(
        {
            "speechbrain_sed_condmix.dataio.encoder.FrameLabelEncoder",
            "speechbrain_sed_condmix.lobes.features.CNNMelFrontEnd",
            "speechbrain_sed_condmix.lobes.features.ATSTMelFrontEnd",
            "speechbrain_sed_condmix.lobes.features.DualMelFrontEnd",
            "speechbrain_sed_condmix.lobes.crnn.CRNN",
            "speechbrain_sed_condmix.lobes.atst.ATSTFrame",
            "speechbrain_sed_condmix.lobes.atst_sed.ATSTSED",
            "speechbrain.utils.parameter_transfer.Pretrainer",
        }
    ),
    # ``mel_scaling`` maps the ``causal`` flag to the front end's scaling
    # name, a pure function of a bool; the CRNN recipes write it.
    "!apply:": frozenset(
        {
            "len",
            "speechbrain_sed_condmix.dataio.custom.load_classes",
            "speechbrain_sed_condmix.lobes.causal.mel_scaling",
        }
    ),
    "!name:": frozenset(),
    "!module:": frozenset(),
    "!applyref:": frozenset(),
}

#: HyperPyYAML tags that only move data around.
PLAIN_TAGS = frozenset({"!ref", "!copy", "!tuple", "!PLACEHOLDER"})

#: YAML's own data tags (``tag:yaml.org,2002:<name>``); ``python/...`` is
#: not among them.
CORE_TAGS = frozenset(
    {
        "str",
        "int",
        "float",
        "bool",
        "null",
        "seq",
        "map",
        "timestamp",
        "binary",
        "merge",
        "omap",
        "pairs",
        "set",
        "value",
    }
)
_CORE = "tag:yaml.org,2002:"

#: HyperPyYAML's implicit ``!tuple`` (any scalar style, to be safe).
_TUPLE = re.compile(r"^\(.*\)$", re.DOTALL)

#: The opt-in, as the messages name it.
OPT_IN = "trust_remote_code=True (sed-detect --trust-remote-code)"


class UntrustedYAMLError(ValueError):
    """A YAML names targets outside the allow-list; nothing was built.

    Arguments
    ---------
    message : str
        The message.
    targets : list of Target
        The refused tags.
    """

    def __init__(self, message, targets):
        super().__init__(message)
        self.targets = targets


@dataclass(frozen=True)
class Target:
    """One tag that builds or reads something, where it is written.

    Arguments
    ---------
    key : str
        Path of the node: ``model.n_class``, ``notes.a[1].b``.
    line : int
        Line in the file (1-based).
    tag : str
        The whole tag, e.g. ``!apply:os.system``.
    """

    key: str
    line: int
    tag: str

    def __str__(self):
        return f"key '{self.key}' (line {self.line}): {self.tag}"


def is_allowed(tag):
    """Whether a tag is plain data or an allow-listed target.

    Arguments
    ---------
    tag : str
        A resolved tag.

    Returns
    -------
    bool

    Example
    -------
    >>> is_allowed("!new:speechbrain_sed_condmix.lobes.crnn.CRNN")
    True
    >>> is_allowed("!apply:os.system"), is_allowed("!include:x.yaml")
    (False, False)
    >>> is_allowed("tag:yaml.org,2002:python/object/apply:os.system")
    False
    """
    if tag in PLAIN_TAGS:
        return True
    if tag.startswith(_CORE):
        return tag[len(_CORE) :] in CORE_TAGS
    for prefix, targets in ALLOWED_TARGETS.items():
        if tag.startswith(prefix):
            return tag[len(prefix) :] in targets
    return False


def _compose(text, pyyaml=False):
    if pyyaml:
        import yaml

        return yaml.compose(text, Loader=yaml.SafeLoader)
    from ruamel.yaml import YAML

    return YAML(typ="rt").compose(text)


def _walk(node, key, seen, found, line_offset=0):
    """Every tag under ``node`` that is not a plain core tag."""
    if node is None or id(node) in seen:
        return
    seen.add(id(node))
    tag = str(node.tag or "")
    line = node.start_mark.line + 1 + line_offset
    if not (tag.startswith(_CORE) and tag[len(_CORE) :] in CORE_TAGS):
        found.append(Target(key or "(document)", line, tag))
    kind = type(node).__name__
    if kind == "MappingNode":
        for name, value in node.value:
            label = name.value if type(name).__name__ == "ScalarNode" else "?"
            child = f"{key}.{label}" if key else str(label)
            _walk(name, child, seen, found, line_offset)
            _walk(value, child, seen, found, line_offset)
    elif kind == "SequenceNode":
        for index, value in enumerate(node.value):
            _walk(value, f"{key}[{index}]", seen, found, line_offset)
    elif isinstance(node.value, str) and (
        tag == "!tuple" or _TUPLE.match(node.value)
    ):
        # HyperPyYAML parses "[" + value[1:-1] + "]" with PyYAML's full
        # loader; what does not parse is not built either.
        try:
            inner = _compose("[" + node.value[1:-1] + "]", pyyaml=True)
        except Exception:  # noqa: BLE001 - any parse error: nothing built
            return
        _walk(inner, f"{key} (tuple)", seen, found, line - 1)


def yaml_tags(text):
    """Every tag of a YAML text that is not one of YAML's data tags.

    Parses with the composer only: nothing is constructed.

    Arguments
    ---------
    text : str
        YAML (HyperPyYAML) text.

    Returns
    -------
    list of Target
        In document order, with their key paths and lines.

    Raises
    ------
    ValueError
        When the text is not YAML.

    Example
    -------
    >>> text = "a: !ref <b>\\nb: [1, {c: !apply:os.system [ls]}]\\n"
    >>> [str(t) for t in yaml_tags(text)]
    ["key 'a' (line 1): !ref", "key 'b[1].c' (line 2): !apply:os.system"]
    """
    found = []
    _walk(_compose(text), "", set(), found)
    return found


def check_yaml(
    text,
    source="hyperparams.yaml",
    trust_remote_code=False,
    overrides=None,
    opt_in=OPT_IN,
):
    """Refuse a YAML that names anything outside the allow-list.

    Arguments
    ---------
    text : str
        The YAML text, as it will be loaded.
    source : str or pathlib.Path
        The file (or folder), named in messages.
    trust_remote_code : bool
        Return the targets outside the list instead of refusing them.
    overrides : dict or str, optional
        The overrides the loader will apply (checked with the text).
    opt_in : str
        How the caller opts in, for the message.

    Returns
    -------
    list of Target
        The targets outside the allow-list (empty unless trusted).

    Raises
    ------
    UntrustedYAMLError
        Naming the file, each key, line and target, and the opt-in.
    ValueError
        When the text is not YAML.

    Example
    -------
    >>> check_yaml("n: !apply:len [[a, b]]")
    []
    >>> check_yaml("x:\\n- !name:builtins.eval", source="m/hyperparams.yaml")
    Traceback (most recent call last):
    ...
    speechbrain_sed_condmix.safe_yaml.UntrustedYAMLError: m/hyperparams...
    """
    try:
        outside = [t for t in yaml_tags(text) if not is_allowed(t.tag)]
    except Exception as err:  # noqa: BLE001 - ruamel's and PyYAML's errors
        raise ValueError(f"{source}: not valid YAML ({err})") from None
    if outside and trust_remote_code:
        return outside
    if not outside:
        # The text as HyperPyYAML will build it: references resolved.
        from hyperpyyaml import resolve_references

        resolved = resolve_references(text, overrides).getvalue()
        outside = [t for t in yaml_tags(resolved) if not is_allowed(t.tag)]
        where = " after its !ref references are resolved"
        if outside and trust_remote_code:
            return outside
    else:
        where = ""
    if outside:
        listed = "; ".join(str(t) for t in outside)
        raise UntrustedYAMLError(
            f"{source}{where} names {listed}: not on the allow-list of "
            "what this package's model folders build (its classes, "
            "SpeechBrain's Pretrainer, plain data). Nothing was built or "
            "run. Load it only if you trust whoever made it, with "
            f"{opt_in}.",
            outside,
        )
    return []
