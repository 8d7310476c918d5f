"""A shorter ``--help`` for the jsonargparse commands: ``resemb-pl`` and ``resemb_pl.pretrain``.

jsonargparse prints every option in the usage line, the whole docstring of every parameter and,
for a class-typed parameter, every subclass imported so far (torch's optimizers, Lightning's 30
callbacks, ...). :class:`CompactHelpFormatter` keeps what a user of this project needs on one
screen per group:

- the usage line names the top-level options only (``--trainer CONFIG``, ``--model CONFIG``,
  ...); each group's ``--group.key`` options are listed below it;
- each option's help starts on the line below it, indented by 8, so it wraps less;
- ``--key.help CLASS`` (the options of one class, e.g. ``--model.backbone.help DIN``) still
  works but is not listed under every class-valued option; :data:`CLASS_HELP` says it once;
- options outside ``full_help_keys`` (Lightning's: the Trainer's, ``--ckpt_path``, ...) show the
  first sentence of their documentation and their default (the metavar names the value);
- "known subclasses" lists the classes of this project and of the user's modules by name, and
  counts those of the libraries it builds on (:data:`UPSTREAM`), whose documentation lists them.
"""

from __future__ import annotations

import re
from argparse import SUPPRESS, Action

from jsonargparse import DefaultHelpFormatter

#: A sentence for the description of a command whose ``--key.help`` options are not listed.
CLASS_HELP = "--KEY.help CLASS prints the options of one class (e.g. --model.backbone.help DIN)."

#: Packages whose classes ``--help`` counts instead of naming them.
UPSTREAM = ("torch", "torch_geometric", "torchmetrics", "lightning", "pytorch_lightning",
            "lightning_fabric")

_TYPE = re.compile(r"type: %\(type\)s(, )?")
_SUBCLASSES = re.compile(r", known subclasses: (?P<names>[^()]*)\)$")
# A full stop that ends a sentence: followed by a space or the end, not in "e.g." or "i.e.".
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)\.(?=\s|$)")


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` that is not only its default, whitespace collapsed.

    Example::

        first_sentence("Stop at this epoch. Disabled by default.")  # "Stop at this epoch."
        first_sentence("Defaults to ``None``. If ``True``, load weights only.")
        # "If ``True``, load weights only."
    """
    text = " ".join(text.split())
    while True:
        end = _SENTENCE_END.search(text)
        sentence = text[: end.end()] if end else text
        rest = text[len(sentence):].strip()
        if not (sentence.startswith("Default") and rest):
            return sentence
        text = rest


def shorten_subclasses(names: list[str], upstream: tuple[str, ...] = UPSTREAM) -> str:
    """Name the classes from outside ``upstream`` and count the others, per package.

    Example::

        shorten_subclasses(["torch.optim.Adam", "torch.optim.SGD", "resemb_pl.optim.RowAdam"])
        # "resemb_pl.optim.RowAdam and 2 from torch"
    """
    named = [n for n in names if n.partition(".")[0] not in upstream]
    counts: dict[str, int] = {}
    for name in names:
        top = name.partition(".")[0]
        if top in upstream:
            counts[top] = counts.get(top, 0) + 1
    counted = [f"{n} from {top}" for top, n in counts.items()]
    if named and counted:
        return ", ".join(named) + " and " + ", ".join(counted)
    return ", ".join(named or counted)


class CompactHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help formatter, shortened for this project's commands.

    Attributes:
        full_help_keys: The option prefixes (``"model."``) whose documentation is shown in
            full; ``None`` shows every option's in full.
        upstream: Packages whose subclasses are counted, not named.
    """

    full_help_keys: tuple[str, ...] | None = None
    upstream: tuple[str, ...] = UPSTREAM

    def __init__(self, prog: str, **kwargs) -> None:
        kwargs.setdefault("max_help_position", 8)
        super().__init__(prog, **kwargs)

    @staticmethod
    def _is_class_help(action: Action) -> bool:
        # jsonargparse's `--key.help CLASS`, which prints the options of a subclass.
        return bool(action.option_strings) and all(s.endswith(".help")
                                                   for s in action.option_strings)

    def add_argument(self, action: Action) -> None:
        if not self._is_class_help(action):
            super().add_argument(action)

    def _is_full(self, action: Action) -> bool:
        if self.full_help_keys is None:
            return True
        return any(s.lstrip("-").startswith(self.full_help_keys) for s in action.option_strings)

    def _get_help_string(self, action: Action) -> str:
        help_string = super()._get_help_string(action)
        if not help_string or help_string == SUPPRESS:
            return help_string
        extra = ""
        if action.help and help_string.startswith(action.help):
            # "<doc> (type: ..., default: ..., known subclasses: ...)"
            doc, extra = action.help, help_string[len(action.help):]
            if not self._is_full(action):
                doc = first_sentence(doc)
                extra = _TYPE.sub("", extra).replace(" ()", "")
            help_string = doc + extra
        match = _SUBCLASSES.search(help_string)
        if match:
            names = [n.strip() for n in match["names"].split(",") if n.strip()]
            shortened = shorten_subclasses(names, self.upstream)
            help_string = help_string[: match.start("names")] + shortened + ")"
        return help_string

    def _format_usage(self, usage, actions, groups, prefix) -> str:
        # Only the top-level options: a group's `--group.key` options follow its `--group`.
        actions = [a for a in actions
                   if not any("." in s.lstrip("-") for s in a.option_strings)]
        return super()._format_usage(usage, actions, groups, prefix)
